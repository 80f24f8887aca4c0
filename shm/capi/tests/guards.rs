//! What the C API promises beyond its functions, checked from Rust through the rlib: no
//! panic crosses into C, and a dead daemon is reported, not hung on.

mod common;

use agentwire::*;
use common::{scratch, Daemon};
use std::ffi::{CStr, CString};

fn last_error() -> String {
    // SAFETY: aw_last_error returns a NUL-terminated string of this thread, never NULL.
    unsafe { CStr::from_ptr(aw_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_panic_inside_the_guard_becomes_aw_err_panic_with_its_message() {
    let status = guard_for_tests(|| panic!("deliberate panic in a test"));
    assert_eq!(status, aw_status::AW_ERR_PANIC);
    assert!(
        last_error().contains("deliberate panic in a test"),
        "{}",
        last_error()
    );
    // The thread goes on, and an error message is per thread.
    assert_eq!(guard_for_tests(|| Ok(())), aw_status::AW_OK);
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "", "another thread has no message yet");
}

/// The source of every exported function: each runs its body in the guard
/// (`guard`, `with_agent` or `with_options`), except the few that only read a constant or
/// a thread-local and cannot panic.
#[test]
fn every_exported_function_runs_its_body_in_the_panic_guard() {
    const CANNOT_PANIC: &[&str] = &[
        "aw_last_error",
        "aw_last_nack_reason",
        "aw_status_name",
        "aw_send_options_default",
    ];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(src).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, piece) in text.split("#[no_mangle]").enumerate().skip(1) {
            let name_start = piece.find("fn ").unwrap() + 3;
            let name: String = piece[name_start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let body_start = piece.find('{').unwrap();
            let body = &piece[body_start..piece[body_start..].find("\n}").unwrap() + body_start];
            let guarded = ["guard(", "with_agent(", "with_options("]
                .iter()
                .any(|g| body.contains(g));
            assert!(
                guarded || CANNOT_PANIC.contains(&name.as_str()),
                "exported function #{i} `{name}` does not run its body in the panic guard"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "found the exported functions ({checked})");
}

#[test]
fn a_killed_daemon_reads_as_disconnected_and_reconnect_gives_up_after_its_attempts() {
    let dir = scratch("dead");
    let mut daemon = Daemon::start(&dir);
    let socket = CString::new(daemon.socket.to_str().unwrap()).unwrap();
    let mut options = std::ptr::null_mut();
    let mut agent = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings, writable out-pointers, live handles used by this thread.
    unsafe {
        assert_eq!(
            aw_options_new(c"doomed".as_ptr(), &mut options),
            aw_status::AW_OK
        );
        assert_eq!(
            aw_options_set_socket(options, socket.as_ptr()),
            aw_status::AW_OK
        );
        assert_eq!(aw_options_set_reconnect(options, 2, 1), aw_status::AW_OK);
        assert_eq!(aw_connect(options, &mut agent), aw_status::AW_OK);
        aw_options_free(options);
        assert_eq!(aw_ensure_connected(agent), aw_status::AW_OK);
    }
    daemon.kill();
    let mut msg = std::mem::MaybeUninit::<aw_message>::uninit();
    // SAFETY: as above; `msg` is writable.
    unsafe {
        // A receive waiting forever returns once it notices the daemon is gone.
        assert_eq!(
            aw_recv(agent, msg.as_mut_ptr(), AW_WAIT_FOREVER),
            aw_status::AW_ERR_DISCONNECTED
        );
        assert_eq!(aw_ensure_connected(agent), aw_status::AW_ERR_DISCONNECTED);
        assert_eq!(aw_reconnect(agent), aw_status::AW_ERR_RECONNECT_FAILED);
        assert!(last_error().contains("2 attempts"), "{}", last_error());
        aw_close(agent);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
