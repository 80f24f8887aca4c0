//! An agent in its own process for the router's cross-process tests. Not an operator tool.
//!
//! ```text
//! agentwire-router-peer agent-recv SOCKET NAME COUNT     receive and check COUNT frames
//! agentwire-router-peer agent-recv-prefix SOCKET NAME    receive and check until 2 s of silence
//! agentwire-router-peer agent-send SOCKET NAME DEST_ID COUNT   (COUNT 0: until killed)
//! agentwire-router-peer agent-serve SOCKET NAME CAPABILITY VERSION FEATURE
//!                                   serve until killed, printing `got <first payload byte>`
//! agentwire-router-peer agent-subscribe SOCKET NAME TOPIC COUNT
//!                                   subscribe, print `ready`, then print each of COUNT
//!                                   payloads (UTF-8, lossy) on its own line as `msg <text>`
//! agentwire-router-peer agent-orphan SOCKET NAME
//!                                   connect, hand the control socket to a `sleep` child,
//!                                   print `child <pid>` and exit without saying goodbye
//! ```

use agentwire_shm::client::Agent;
use agentwire_shm::idle::IdleStrategy;
use agentwire_shm::pattern::{checked_len, fill_checked, read_checked};
use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: agentwire-router-peer agent-recv SOCKET NAME COUNT | \
         agent-recv-prefix SOCKET NAME | agent-send SOCKET NAME DEST COUNT | \
         agent-serve SOCKET NAME CAPABILITY VERSION FEATURE | \
         agent-subscribe SOCKET NAME TOPIC COUNT | agent-orphan SOCKET NAME"
    );
    std::process::exit(2)
}

/// Panics unless `payload` is the intact checked frame number `expected`.
fn check(payload: &[u8], expected: u64) {
    match read_checked(payload) {
        Ok(seq) => assert_eq!(seq, expected, "frames lost, duplicated or reordered"),
        Err(e) => panic!("{e}"),
    }
}

fn connect(socket: &str, name: &str) -> Agent {
    let agent = Agent::builder(name)
        .socket(socket)
        .idle(IdleStrategy::Spin)
        .connect()
        .expect("connect");
    println!("id {}", agent.id());
    agent
}

/// Receives checked frames until `count` arrived (`Some`) or `silence` passes without one.
fn receive(agent: &mut Agent, count: Option<u64>, silence: Duration) -> u64 {
    let mut expected = 0u64;
    while count.is_none_or(|c| expected < c) {
        let Some(msg) = agent.recv(Some(silence)).expect("recv") else {
            assert!(count.is_none(), "timed out after {expected} frames");
            break;
        };
        check(msg.payload(), expected);
        expected += 1;
    }
    expected
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let number = |i: usize| -> u64 { arg(i).parse().unwrap_or_else(|_| usage()) };
    match arg(0).as_str() {
        "agent-recv" => {
            let mut agent = connect(&arg(1), &arg(2));
            let received = receive(&mut agent, Some(number(3)), Duration::from_secs(30));
            println!("ok {received}");
        }
        "agent-recv-prefix" => {
            let mut agent = connect(&arg(1), &arg(2));
            let received = receive(&mut agent, None, Duration::from_secs(2));
            println!("ok {received}");
        }
        "agent-send" => {
            let mut agent = connect(&arg(1), &arg(2));
            let dest = u32::try_from(number(3)).unwrap_or_else(|_| usage());
            let count = number(4);
            let mut buf = vec![0u8; 1024];
            let mut seq = 0u64;
            while count == 0 || seq < count {
                let len = checked_len(seq).min(buf.len());
                fill_checked(seq, &mut buf[..len]);
                agent.send(dest, &buf[..len]).expect("send");
                seq += 1;
            }
            println!("sent {count}");
        }
        "agent-serve" => {
            let feature = u32::try_from(number(5)).unwrap_or_else(|_| usage());
            let mut agent = Agent::builder(&arg(2))
                .socket(arg(1))
                .capability(&arg(3), &arg(4))
                .feature(feature)
                .connect()
                .expect("connect");
            println!("id {}", agent.id());
            loop {
                if let Some(msg) = agent.recv(None).expect("recv") {
                    println!("got {}", msg.payload().first().copied().unwrap_or(0));
                }
            }
        }
        "agent-subscribe" => {
            let mut agent = Agent::builder(&arg(2))
                .socket(arg(1))
                .topic(&arg(3))
                .connect()
                .expect("connect");
            let count = number(4);
            println!("ready");
            for _ in 0..count {
                let msg = agent
                    .recv(Some(Duration::from_secs(30)))
                    .expect("recv")
                    .expect("watchdog: no publish within 30 s");
                println!("msg {}", String::from_utf8_lossy(msg.payload()));
            }
        }
        "agent-orphan" => {
            let agent = connect(&arg(1), &arg(2));
            // Let every socket descriptor (the control connection) survive exec, so the
            // child keeps it open after this process is gone.
            for entry in std::fs::read_dir("/proc/self/fd").expect("fds").flatten() {
                let is_socket = std::fs::read_link(entry.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
                let fd = entry.file_name().to_string_lossy().parse::<i32>();
                if let (true, Ok(fd)) = (is_socket, fd) {
                    // SAFETY: the descriptor is open (listed just now) and we only change
                    // its flags; ownership stays where it was.
                    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).expect("setfd");
                }
            }
            let child = std::process::Command::new("sleep")
                .arg("30")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn sleep");
            println!("child {}", child.id());
            std::mem::forget(agent);
            std::process::exit(0);
        }
        _ => usage(),
    }
}
