//! The handshake of one connection as a state machine, one step per message (docs/wire.md
//! §5): `Hello` → `Welcome` (or `Refused`), then `Register` (an agent to admit) or `Status`
//! (an admin tool). The control loop feeds it each message as it arrives and enforces each
//! step's deadline, so a silent or slow client waits alone.

use crate::server::{validate_registration, AllowList, HandshakeError};
use agentwire_shm::control::{
    negotiate, ClientMsg, ControlConn, PeerCredentials, RefuseReason, Registration, ServerMsg,
};

/// Where a connection is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Waiting for `Hello`.
    Hello,
    /// Welcomed at `version`; waiting for `Register` or `Status`.
    Register {
        /// The negotiated protocol version.
        version: u16,
    },
    /// A status query answered; the client may ask for the rest of the agents.
    Status,
}

/// What the control loop does after a handshake message.
#[derive(Debug)]
pub(crate) enum Next {
    /// Wait for the next message (the step's deadline starts again).
    Wait,
    /// Answer a status query (its first page of agents); the connection stays open for
    /// the next pages until the client closes it or the step's deadline passes.
    Status,
    /// Answer the next page of agents, those with ids above this.
    StatusAgents(u32),
    /// Answer the next page of routes (past the first `skip`).
    StatusRoutes(u32),
    /// Admit an agent with this registration.
    Register(Box<Registration>),
    /// Refuse (the client is told why), count it, and close.
    Refuse {
        /// What the client is told.
        reason: RefuseReason,
        /// The error, for the log and counters.
        error: HandshakeError,
    },
}

/// What a handshake step needs from the listener: who may connect and which versions.
pub(crate) struct Policy<'a> {
    pub(crate) allow: &'a AllowList,
    pub(crate) versions: (u16, u16),
}

/// Advances `step` with `msg` from `peer`, sending `Welcome` itself when the version is
/// agreed. A peer not on the allow-list was refused as it was accepted (`gate`), before
/// anything was read; the check here catches one the allow-list dropped since (a reload).
pub(crate) fn advance(
    step: &mut Step,
    msg: ClientMsg,
    peer: &PeerCredentials,
    policy: &Policy<'_>,
    conn: &ControlConn,
) -> Next {
    match (*step, msg) {
        (Step::Hello, _) if !policy.allow.admits(peer, conn.peer_groups()) => Next::Refuse {
            reason: RefuseReason::NotPermitted,
            error: HandshakeError::NotPermitted(*peer),
        },
        (
            Step::Hello,
            ClientMsg::Hello {
                version_min,
                version_max,
                ..
            },
        ) => match negotiate((version_min, version_max), policy.versions) {
            Some(version) => {
                let welcome = ServerMsg::Welcome {
                    version,
                    daemon: format!("agentwire {}", env!("CARGO_PKG_VERSION")),
                };
                match conn.send(&welcome, &[]) {
                    Ok(()) => {
                        *step = Step::Register { version };
                        Next::Wait
                    }
                    Err(e) => Next::Refuse {
                        reason: RefuseReason::BadRequest,
                        error: HandshakeError::Control(e),
                    },
                }
            }
            None => Next::Refuse {
                reason: RefuseReason::VersionUnsupported,
                error: HandshakeError::VersionUnsupported {
                    client_min: version_min,
                    client_max: version_max,
                    daemon_min: policy.versions.0,
                    daemon_max: policy.versions.1,
                },
            },
        },
        (Step::Hello, _) => bad("expected Hello first"),
        (Step::Register { .. }, ClientMsg::Status) => {
            *step = Step::Status;
            Next::Status
        }
        (Step::Status, ClientMsg::StatusAgents { after }) => Next::StatusAgents(after),
        (Step::Status, ClientMsg::StatusRoutes { skip }) => Next::StatusRoutes(skip),
        (Step::Status, _) => bad("expected StatusAgents or StatusRoutes after Status"),
        (Step::Register { .. }, ClientMsg::Register(registration)) => {
            match validate_registration(&registration) {
                Ok(()) => Next::Register(Box::new(registration)),
                Err(detail) => Next::Refuse {
                    reason: RefuseReason::BadRequest,
                    error: HandshakeError::BadRequest(detail),
                },
            }
        }
        (Step::Register { .. }, _) => bad("expected Register or Status after Hello"),
    }
}

fn bad(detail: &str) -> Next {
    Next::Refuse {
        reason: RefuseReason::BadRequest,
        error: HandshakeError::BadRequest(detail.into()),
    }
}

/// Tells the client why it is refused (best effort: the connection closes next).
pub(crate) fn refuse(conn: &ControlConn, reason: RefuseReason, error: &HandshakeError) {
    let _ = conn.send(
        &ServerMsg::Refused {
            reason,
            detail: error.to_string(),
        },
        &[],
    );
}

/// Messages a connection refused at accept may have queued that are discarded unread; a
/// peer that queued more finds its connection reset instead of refused.
const UNREAD_DISCARD_MAX: usize = 16;

/// Refuses a connection nothing was read from, so that the client still reads why. Closing
/// a socket with unread messages resets the connection, and the client's next receive then
/// fails before it reaches the `Refused` waiting for it. So the reading side is shut first
/// (the client's sends fail from then on instead of queueing), what it already sent is
/// discarded whole without being looked at (at most [`UNREAD_DISCARD_MAX`] messages, their
/// descriptors closed by the kernel), and then the refusal goes out; the caller closes.
pub(crate) fn refuse_unread(conn: &ControlConn, reason: RefuseReason, error: &HandshakeError) {
    use rustix::net::{RecvFlags, Shutdown};
    let _ = rustix::net::shutdown(conn, Shutdown::Read);
    let mut byte = [0u8; 1];
    for _ in 0..UNREAD_DISCARD_MAX {
        // TRUNC: the whole message goes, whatever its length; 0: nothing left (read side shut).
        match rustix::net::recv(conn, &mut byte, RecvFlags::DONTWAIT | RecvFlags::TRUNC) {
            Ok((0, _)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    refuse(conn, reason, error);
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentwire_shm::control::{PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN};

    fn hello(min: u16, max: u16) -> ClientMsg {
        ClientMsg::Hello {
            version_min: min,
            version_max: max,
            client: "test".into(),
        }
    }

    fn me() -> PeerCredentials {
        PeerCredentials {
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    #[test]
    fn hello_then_register_admits_and_status_answers() {
        let (server, _client) = ControlConn::pair().unwrap();
        let allow = AllowList::current_user();
        let policy = Policy {
            allow: &allow,
            versions: (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX),
        };
        let mut step = Step::Hello;
        let msg = hello(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
        assert!(matches!(
            advance(&mut step, msg, &me(), &policy, &server),
            Next::Wait
        ));
        assert_eq!(
            step,
            Step::Register {
                version: PROTOCOL_VERSION_MAX
            }
        );
        let register = ClientMsg::Register(Registration {
            name: "a".into(),
            ..Default::default()
        });
        let mut then_status = step;
        assert!(matches!(
            advance(&mut step, register, &me(), &policy, &server),
            Next::Register(_)
        ));
        let status = advance(&mut then_status, ClientMsg::Status, &me(), &policy, &server);
        assert!(matches!(status, Next::Status));
    }

    #[test]
    fn out_of_order_strangers_and_bad_versions_are_refused() {
        let (server, _client) = ControlConn::pair().unwrap();
        let allow = AllowList::current_user();
        let policy = Policy {
            allow: &allow,
            versions: (2, 2),
        };
        let refused = |next: Next, want: RefuseReason| matches!(next, Next::Refuse { reason, .. } if reason == want);
        let mut step = Step::Hello;
        let next = advance(&mut step, ClientMsg::Status, &me(), &policy, &server);
        assert!(refused(next, RefuseReason::BadRequest));
        let next = advance(&mut step, hello(5, 7), &me(), &policy, &server);
        assert!(refused(next, RefuseReason::VersionUnsupported));
        let nobody = AllowList::nobody();
        let closed = Policy {
            allow: &nobody,
            versions: (2, 2),
        };
        let next = advance(&mut step, hello(2, 2), &me(), &closed, &server);
        assert!(refused(next, RefuseReason::NotPermitted));
        let mut welcomed = Step::Register { version: 2 };
        let next = advance(&mut welcomed, hello(2, 2), &me(), &policy, &server);
        assert!(refused(next, RefuseReason::BadRequest));
        let empty_name = ClientMsg::Register(Registration::default());
        let next = advance(&mut welcomed, empty_name, &me(), &policy, &server);
        assert!(refused(next, RefuseReason::BadRequest));
    }

    #[test]
    fn a_refusal_without_reading_still_reaches_a_client_that_already_sent() {
        let (server, client) = ControlConn::pair().unwrap();
        client.send(&hello(2, 2), &[]).unwrap();
        client.send(&ClientMsg::Status, &[]).unwrap();
        let error = HandshakeError::NotPermitted(me());
        refuse_unread(&server, RefuseReason::NotPermitted, &error);
        drop(server);
        let wait = Some(std::time::Duration::from_secs(5));
        match client.recv::<ServerMsg>(wait) {
            Ok((ServerMsg::Refused { reason, .. }, _)) => {
                assert_eq!(reason, RefuseReason::NotPermitted)
            }
            other => panic!("the refusal was lost: {other:?}"),
        }
        // And a client that sends after the refusal sees the connection closed, then reads it.
        let (server, client) = ControlConn::pair().unwrap();
        refuse_unread(&server, RefuseReason::NotPermitted, &error);
        assert!(client.send(&hello(2, 2), &[]).is_err());
        drop(server);
        let refusal = client.recv::<ServerMsg>(wait).unwrap().0;
        assert!(matches!(refusal, ServerMsg::Refused { .. }), "{refusal:?}");
    }
}
