//! TCP listeners that own their port: SO_REUSEADDR (a restarted daemon binds again at once,
//! past connections in TIME_WAIT) but never SO_REUSEPORT, which glommio's own
//! `TcpListener::bind` sets. With it, a second process of the same user could bind the
//! same port and silently take a share of the incoming connections; here it is refused
//! with "address in use".

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

/// Connections the kernel queues before they are accepted.
const BACKLOG_CONNECTIONS: i32 = 1024;

/// A glommio listener on `addr` that no other socket may share (crate-private: the remote
/// listener and node links bind through it). Call it on the executor that will accept.
#[allow(unsafe_code)]
pub(crate) fn bind_exclusive(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG_CONNECTIONS)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a bound, listening TCP socket that this function owns (taken out of
    // `socket` above, so nothing else closes it); the listener takes ownership of it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_listener_on_the_same_port_is_refused() {
        glommio::LocalExecutor::default().run(async {
            let first = bind_exclusive("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = first.local_addr().unwrap();
            let second = bind_exclusive(addr).map(|_| ()).unwrap_err();
            assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse, "{second}");
            // Nor may glommio's own bind (SO_REUSEPORT) share it.
            assert!(TcpListener::bind(addr).is_err());
            drop(first);
        });
    }
}
