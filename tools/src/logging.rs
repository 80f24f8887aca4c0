//! Where the log goes and in what form: everything the daemon (and any command) logs goes
//! through `tracing` to stderr, in one of three forms.
//!
//! - **text**: one line per event with a timestamp; colour only when stderr is a terminal.
//! - **journal**: for systemd's journal, chosen by itself when `JOURNAL_STREAM` names this
//!   process's stderr (systemd sets it for a service's stdout/stderr): no timestamp (the
//!   journal stamps each line), no colour, and each line prefixed `<N>` with its syslog
//!   priority (sd-daemon(3): `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and
//!   trace), so `journalctl -p warning` finds the warnings.
//! - **json**: one JSON object per line for log shippers (`timestamp`, `level`, `target`,
//!   `message` and the event's fields).
//!
//! `--log-format auto|text|journal|json` (or `AGENTWIRE_LOG_FORMAT`) picks one; `auto`, the
//! default, is journal under systemd and text elsewhere. `AGENTWIRE_LOG` filters
//! (`warn`, `agentwire_router=debug`; default `info`).
//!
//! ```text
//! $ agentwire serve --log-format json 2>&1 | head -1
//! {"timestamp":"2025-01-01T00:00:00.000000Z","level":"INFO","message":"daemon started",...}
//! $ JOURNAL_STREAM=... agentwire serve     # under systemd: auto picks journal
//! <6>agentwire_tools::serve_cmd: daemon started pid=4242 ...
//! ```

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Full, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The form of the log (`--log-format`, `AGENTWIRE_LOG_FORMAT`).
///
/// ```text
/// agentwire --log-format json serve
/// AGENTWIRE_LOG_FORMAT=journal agentwire serve
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Journal when stderr is systemd's journal stream (JOURNAL_STREAM), else text.
    #[default]
    Auto,
    /// Plain lines with a timestamp; colour only on a terminal.
    Text,
    /// `<N>`-prefixed lines for journald (syslog priorities), no colour, no timestamp.
    Journal,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `Auto` decided for this process: `Journal` when stderr is the journal's stream.
    fn resolve(self) -> Self {
        match self {
            Self::Auto if stderr_is_journal() => Self::Journal,
            Self::Auto => Self::Text,
            other => other,
        }
    }
}

/// Installs the log subscriber for `format` (filter from `AGENTWIRE_LOG`, default `info`)
/// and returns the form chosen, which [`report_error`] follows.
///
/// ```text
/// let format = logging::init(cli.log_format); // first thing in main
/// ```
pub fn init(format: LogFormat) -> LogFormat {
    let format = format.resolve();
    let filter =
        || EnvFilter::try_from_env("AGENTWIRE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .event_format(JournalFormat::default())
            .init(),
        // Colour codes only for a terminal: in a file or a pipe they are noise.
        LogFormat::Text | LogFormat::Auto => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
    format
}

/// Writes a command's final error to stderr in the log's form: `agentwire: error: ...` as
/// text, each line `<3>`-prefixed for the journal, an error event for JSON. A closed
/// stderr is ignored (never a panic).
///
/// ```text
/// logging::report_error(format, &format!("agentwire: error: {e}"));
/// ```
pub fn report_error(format: LogFormat, message: &str) {
    match format {
        LogFormat::Json => tracing::error!("{message}"),
        LogFormat::Journal => {
            let mut out = String::new();
            for line in message.lines() {
                let _ = writeln!(out, "<{}>{line}", priority(Level::ERROR));
            }
            let _ = std::io::stderr().write_all(out.as_bytes());
        }
        LogFormat::Text | LogFormat::Auto => {
            let _ = writeln!(std::io::stderr(), "{message}");
        }
    }
}

/// The syslog priority journald reads from a `<N>` prefix (sd-daemon(3)).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to the
/// `DEVICE:INODE` of the stream it connects, and a process whose stderr was redirected
/// elsewhere (a shell started from a service) must not prefix its lines.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    value
        .to_str()
        .is_some_and(|value| names_fd(value, std::io::stderr()))
}

/// Whether `journal_stream` (`DEVICE:INODE`) is the file `fd` is open on.
fn names_fd(journal_stream: &str, fd: impl std::os::fd::AsFd) -> bool {
    rustix::fs::fstat(fd)
        .is_ok_and(|st| journal_stream.trim() == format!("{}:{}", st.st_dev, st.st_ino))
}

/// Lines for journald: the default line without timestamp, level or colour, each line of
/// it (a message may have several) prefixed with the event's `<N>` priority.
struct JournalFormat {
    line: format::Format<Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        Self {
            line: format::format()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        self.line.format_event(ctx, Writer::new(&mut text), event)?;
        let prefix = priority(*event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{prefix}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_the_file_stderr_is_open_on() {
        let path = std::env::temp_dir().join(format!("aw-journal-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let st = rustix::fs::fstat(&file).unwrap();
        assert!(names_fd(&format!("{}:{}", st.st_dev, st.st_ino), &file));
        assert!(!names_fd(
            &format!("{}:{}", st.st_dev, st.st_ino + 1),
            &file
        ));
        assert!(!names_fd("not-a-stream", &file));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        let got: Vec<u8> = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG]
            .into_iter()
            .map(priority)
            .collect();
        assert_eq!(got, [3, 4, 6, 7]);
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_escape_codes() {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(JournalFormat::default())
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(agent_id = 7, "two\nlines");
            tracing::error!("broke");
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("<4>") && lines[0].contains("two"),
            "{text}"
        );
        assert!(lines[1].starts_with("<4>lines"), "{text}");
        assert!(
            lines[2].starts_with("<3>") && lines[2].contains("broke"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
