//! Standard output for every command: [`outln!`] and [`out!`] write like `println!` and
//! `print!` but return the write's `io::Result` instead of panicking, so a reader that goes
//! away (`agentwire dlq list | head`) ends the command quietly: the `EPIPE` error travels up
//! with `?` and `main` exits 0 without a message ([`is_broken_pipe`]).
//!
//! Why not the usual CLI fix, resetting SIGPIPE to `SIG_DFL` so the kernel kills the process
//! on a closed pipe: this binary is also the daemon (`serve`) and an agent host (`load`,
//! `dlq replay`, `demo`), which write to Unix control sockets and to the metrics endpoint's
//! TCP connections. With SIGPIPE at `SIG_DFL`, a scraper or client that disconnects
//! mid-write would kill the daemon before it drains its routers and flushes the dead-letter
//! queue. Rust starts with SIGPIPE ignored, so those writes fail with `EPIPE` and are handled
//! where they happen; stdout gets the same treatment here.
//!
//! ```ignore
//! outln!("{} record(s)", n)?;
//! ```

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write found stdout's reader gone; later writes fail at once.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout; `Err` with kind `BrokenPipe` once the reader has gone.
pub fn write_fmt(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    // Relaxed: the flag only saves futile writes; a racing writer gets EPIPE itself.
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::BrokenPipe.into());
    }
    let result = io::stdout().lock().write_fmt(args);
    if let Err(e) = &result {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
    result
}

/// Whether `error` (or an error it wraps) is stdout's reader going away.
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// `println!` to stdout, returning `io::Result<()>` (see the module doc).
macro_rules! outln {
    () => {
        $crate::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout, returning `io::Result<()>` (see the module doc).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_found_inside_boxed_errors() {
        let pipe: Box<dyn std::error::Error> = Box::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&*pipe));
        let other: Box<dyn std::error::Error> = "no daemon".into();
        assert!(!is_broken_pipe(&*other));
        let full: Box<dyn std::error::Error> =
            Box::new(io::Error::from(io::ErrorKind::StorageFull));
        assert!(!is_broken_pipe(&*full));
    }
}
