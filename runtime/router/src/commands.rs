//! The bounded command queue from the control side to one routing core (new agents,
//! departures), whose posts ring the core's wake.

use crate::deferral::Deferral;
use crate::wake::ShardWake;
use agentwire_shm::ring::{Consumer, Producer};
use agentwire_shm::segment::Segment;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

pub(crate) enum RouterCmd {
    Add(Box<NewAgent>),
    Remove { agent_id: u32 },
}

/// The sending end of a routing core's command queue: a bounded channel plus a count of the
/// commands posted, so the core pays one plain load per duty cycle and touches the channel
/// (whose `try_recv` issues a full fence) only when something was posted.
#[derive(Clone)]
pub(crate) struct CommandSender {
    pub(crate) tx: SyncSender<RouterCmd>,
    pub(crate) posted: Arc<AtomicU64>,
    /// The core's wake: a parked core takes the command now, not a park timeout later.
    pub(crate) wake: Arc<ShardWake>,
}

impl CommandSender {
    /// Queues `cmd` without waiting: the control loop never blocks on a routing core. The
    /// command comes back when the queue is full (or the core is gone).
    pub(crate) fn try_send(&self, cmd: RouterCmd) -> Result<(), RouterCmd> {
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(cmd) | TrySendError::Disconnected(cmd)) => return Err(cmd),
        }
        // SYNC POINT: command posted. The command is queued before the count that announces it
        // (pairs with the Acquire loads in `CommandReceiver`).
        self.posted.fetch_add(1, Ordering::Release);
        self.wake.notify();
        Ok(())
    }
}

/// The routing core's end of its command queue (see [`CommandSender`]).
pub(crate) struct CommandReceiver {
    pub(crate) rx: Receiver<RouterCmd>,
    pub(crate) posted: Arc<AtomicU64>,
    /// `posted` when the queue was last emptied.
    pub(crate) seen: u64,
}

impl CommandReceiver {
    /// Whether a command was posted since the queue was last found empty.
    pub(crate) fn pending(&self) -> bool {
        // SYNC POINT: command posted (the Release add in `CommandSender::send`).
        self.posted.load(Ordering::Acquire) != self.seen
    }

    /// The next command, if one was posted since the queue was last found empty.
    pub(crate) fn try_recv(&mut self) -> Option<RouterCmd> {
        // SYNC POINT: command posted (the Release add in `CommandSender::send`).
        let posted = self.posted.load(Ordering::Acquire);
        if posted == self.seen {
            return None;
        }
        match self.rx.try_recv() {
            Ok(cmd) => Some(cmd),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                // Everything counted so far is taken (a command is counted after it is
                // queued, so one queued but not yet counted may have been taken early).
                self.seen = posted;
                None
            }
        }
    }
}

/// A bounded command queue for one routing core, whose posts ring `wake`.
pub(crate) fn command_queue(
    bound: usize,
    wake: Arc<ShardWake>,
) -> (CommandSender, CommandReceiver) {
    let (tx, rx) = sync_channel::<RouterCmd>(bound);
    let posted = Arc::new(AtomicU64::new(0));
    (
        CommandSender {
            tx,
            posted: posted.clone(),
            wake,
        },
        CommandReceiver {
            rx,
            posted,
            seen: 0,
        },
    )
}

pub(crate) struct NewAgent {
    pub(crate) agent_id: u32,
    pub(crate) congested: Arc<AtomicBool>,
    /// One consumer per tx lane (priority class).
    pub(crate) tx: Vec<Consumer>,
    pub(crate) rx: Producer,
    pub(crate) segment: Segment,
    /// Made on the accept thread so the routing core never maps memory.
    pub(crate) deferral: Option<Deferral>,
    /// Its name as mirror slot words ([`crate::agent_mirror::pack_name`]).
    pub(crate) name: [u64; crate::agent_mirror::NAME_WORDS],
}
