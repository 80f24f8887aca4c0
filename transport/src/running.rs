//! A transport's executor thread and its stop flag: started, confirmed (the executor
//! reports whether it bound its socket), and stopped and joined when dropped.

use crate::TransportError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// A running transport executor; dropping it sets the stop flag its tasks poll and joins
/// the thread.
pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    executor: Option<glommio::ExecutorJoinHandle<()>>,
}

impl Running {
    /// Waits for the executor's start report on `started`: the running executor with what
    /// it reported, or (after joining it) the error it reported, as a bind failure.
    pub(crate) fn confirm<T>(
        stop: Arc<AtomicBool>,
        executor: glommio::ExecutorJoinHandle<()>,
        started: &Receiver<Result<T, String>>,
    ) -> Result<(Self, T), TransportError> {
        match started.recv() {
            Ok(Ok(value)) => Ok((
                Self {
                    stop,
                    executor: Some(executor),
                },
                value,
            )),
            Ok(Err(e)) => {
                let _ = executor.join();
                Err(TransportError::Bind(e))
            }
            Err(_) => {
                let _ = executor.join();
                Err(TransportError::Executor(
                    "the executor ended at start".into(),
                ))
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Relaxed is enough: the flag carries no data, and the join below synchronizes.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}
