//! Messages to send: from the command line or from stdin, one per line.

use clap::ValueEnum;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use zmesh::Message;
use zmesh::frames::{self, InputFormat, OutputFormat};

/// Input format flag.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InputArg {
    /// Text; frames split on --separator.
    Text,
    /// Hex per frame; frames split on --separator.
    Hex,
    /// A JSON array per line: strings, or {"hex": ".."} for binary frames.
    Json,
}

/// Output format flag.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputArg {
    /// Text (non-UTF-8 bytes as \xHH); frames joined by --separator (default "|").
    Text,
    /// Hex per frame, joined by --separator.
    Hex,
    /// One JSON array per message.
    Json,
}

impl From<InputArg> for InputFormat {
    fn from(a: InputArg) -> Self {
        match a {
            InputArg::Text => InputFormat::Text,
            InputArg::Hex => InputFormat::Hex,
            InputArg::Json => InputFormat::Json,
        }
    }
}

impl From<OutputArg> for OutputFormat {
    fn from(a: OutputArg) -> Self {
        match a {
            OutputArg::Text => OutputFormat::Text,
            OutputArg::Hex => OutputFormat::Hex,
            OutputArg::Json => OutputFormat::Json,
        }
    }
}

/// Input lines waiting to be sent, bounded so a fast producer cannot grow memory.
const INPUT_BACKLOG_MAX: usize = 256;

/// Parse the argument messages now (bad input fails before anything is sent).
pub fn from_args(
    args: &[String],
    format: InputFormat,
    sep: Option<&str>,
) -> anyhow::Result<Vec<Message>> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            frames::parse_line(a, format, sep)
                .map(Message::from_frames)
                .map_err(|e| super::UsageError(format!("message argument {}: {e}", i + 1)).into())
        })
        .collect()
}

/// A task that reads stdin line by line and parses each into a message. A bad
/// line is reported on stderr with its number and skipped; nothing else is lost.
pub fn from_stdin(format: InputFormat, sep: Option<String>) -> mpsc::Receiver<Message> {
    let (tx, rx) = mpsc::channel(INPUT_BACKLOG_MAX);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut n = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            n += 1;
            match frames::parse_line(&line, format, sep.as_deref()) {
                Ok(f) => {
                    if tx.send(Message::from_frames(f)).await.is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("zmesh: stdin line {n} skipped: {e}"),
            }
        }
    });
    rx
}

/// Messages from the arguments, or else from stdin.
pub enum Source {
    /// Given on the command line.
    Args(std::collections::VecDeque<Message>),
    /// Read from stdin.
    Stdin(mpsc::Receiver<Message>),
    /// Nothing to send.
    None,
}

impl Source {
    /// The next message, or `None` when the input is over.
    pub async fn next(&mut self) -> Option<Message> {
        match self {
            Self::Args(q) => q.pop_front(),
            Self::Stdin(rx) => rx.recv().await,
            Self::None => None,
        }
    }
}

/// Print one received message on stdout.
pub fn print(m: &Message, format: OutputFormat, sep: &str) {
    use std::io::Write;
    let line = frames::format_frames(&m.to_vec(), format, sep);
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) ends output; nothing to report.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
