//! systemd's service notify protocol (sd_notify(3)): newline-separated `KEY=VALUE`
//! assignments in one datagram to the Unix socket `$NOTIFY_SOCKET` names, a file path or,
//! starting with `@`, an abstract name. The watchdog's timeout comes from `$WATCHDOG_USEC`,
//! meant for the process `$WATCHDOG_PID` names (any process when unset).
//!
//! ```ignore
//! if let Some(socket) = NotifySocket::from_env()? {
//!     socket.send("READY=1\nSTATUS=serving")?;
//! }
//! ```

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go: the address `$NOTIFY_SOCKET` names.
#[derive(Debug)]
pub struct NotifySocket {
    addr: SocketAddr,
    /// The variable's value, for error messages.
    name: String,
    sock: UnixDatagram,
}

impl NotifySocket {
    /// The socket `$NOTIFY_SOCKET` names; `None` when it is unset or empty (not started by a
    /// service manager that listens). A value that is no valid address is an error naming it.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(value) if !value.is_empty() => Self::new(&value).map(Some),
            _ => Ok(None),
        }
    }

    /// The socket at `name`: a path, or an abstract name after `@`.
    pub fn new(name: &str) -> io::Result<Self> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
            None if name.starts_with('/') => SocketAddr::from_pathname(name),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@...)",
            )),
        }
        .map_err(|e| io::Error::new(e.kind(), format!("NOTIFY_SOCKET={name:?}: {e}")))?;
        Ok(Self {
            addr,
            name: name.to_string(),
            sock: UnixDatagram::unbound()?,
        })
    }

    /// Sends `message` (assignments separated by newlines) as one datagram.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let sent = self
            .sock
            .send_to_addr(message.as_bytes(), &self.addr)
            .map_err(|e| io::Error::new(e.kind(), format!("NOTIFY_SOCKET={}: {e}", self.name)))?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "NOTIFY_SOCKET={}: sent {sent} of {} bytes",
                    self.name,
                    message.len()
                ),
            ));
        }
        Ok(())
    }
}

/// The watchdog timeout the service manager asks for (`$WATCHDOG_USEC`), when it is meant
/// for this process (`$WATCHDOG_PID` unset or this pid); `None` without a watchdog.
pub fn watchdog_timeout() -> Option<Duration> {
    watchdog_timeout_of(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_timeout`] from the variables' values.
fn watchdog_timeout_of(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => {}
        Some(Ok(p)) if p == own_pid => {}
        Some(_) => return None,
    }
    Some(Duration::from_micros(usec))
}

/// `CLOCK_MONOTONIC` in µs, for `MONOTONIC_USEC=` beside `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_timeout_needs_usec_and_our_pid() {
        let d = Some(Duration::from_millis(200));
        assert_eq!(watchdog_timeout_of(Some("200000"), None, 7), d);
        assert_eq!(watchdog_timeout_of(Some("200000"), Some("7"), 7), d);
        assert_eq!(watchdog_timeout_of(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_timeout_of(Some("200000"), Some("x"), 7), None);
        assert_eq!(watchdog_timeout_of(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout_of(Some("soon"), None, 7), None);
        assert_eq!(watchdog_timeout_of(None, Some("7"), 7), None);
    }

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("aw-notify-proto-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("aw-notify-proto-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let mut buf = [0u8; 64];
        NotifySocket::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1\nSTATUS=a")
            .unwrap();
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=a");
        NotifySocket::new(&format!("@{name}"))
            .unwrap()
            .send("WATCHDOG=1")
            .unwrap();
        let n = by_name.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let e = NotifySocket::new("relative/path").unwrap_err().to_string();
        assert!(e.contains("NOTIFY_SOCKET=\"relative/path\""), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
