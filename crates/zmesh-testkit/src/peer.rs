//! A running pyzmq peer (`tests/python/peer.py`), read line by line with deadlines.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// A pyzmq peer process; killed when dropped.
pub struct PyPeer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// How long any single line may take to arrive.
pub const LINE_WAIT: Duration = Duration::from_secs(15);

impl PyPeer {
    /// Start `peer.py` with `args` and wait for its READY line; returns the peer and its endpoint.
    pub async fn start(args: &[&str]) -> (Self, String) {
        Self::start_script("peer.py", args).await
    }

    /// Start another script of `tests/python` that follows the same READY convention.
    pub async fn start_script(script: &str, args: &[&str]) -> (Self, String) {
        let mut child = Command::new(crate::python::interpreter())
            .arg(crate::python::script(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start python peer (is pyzmq installed? run .ci/run)");
        let stdout = child.stdout.take().expect("stdout");
        let mut peer = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let ready = peer.line().await;
        let ep = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("expected READY, got {ready:?}"))
            .to_owned();
        (peer, ep)
    }

    /// Start `peer.py` without waiting for READY (roles that print something else first).
    pub async fn start_raw(args: &[&str]) -> Self {
        let child = Command::new(crate::python::interpreter())
            .arg(crate::python::script("peer.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start python peer (is pyzmq installed? run ./scripts/test)");
        Self::from_child(child)
    }

    fn from_child(mut child: Child) -> Self {
        let stdout = child.stdout.take().expect("stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next stdout line; panics after [`LINE_WAIT`] or at end of output.
    pub async fn line(&mut self) -> String {
        self.line_within(LINE_WAIT).await
    }

    /// The next stdout line; panics after `wait` or at end of output.
    pub async fn line_within(&mut self, wait: Duration) -> String {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => panic!("python peer exited early"),
            Ok(Err(e)) => panic!("reading python peer: {e}"),
            Err(_) => panic!("python peer said nothing for {wait:?}"),
        }
    }

    /// The next line that is not the READY announcement.
    pub async fn line_after_ready(&mut self) -> String {
        loop {
            let l = self.line().await;
            if !l.starts_with("READY ") {
                return l;
            }
        }
    }

    /// The next line parsed as a message: a JSON list of hex frames.
    pub async fn message(&mut self) -> Vec<Vec<u8>> {
        let l = self.line().await;
        let hexes: Vec<String> =
            parse_json_strings(&l).unwrap_or_else(|| panic!("not a message line: {l:?}"));
        hexes.iter().map(|h| decode_hex(h)).collect()
    }

    /// Wait for the process to exit (bounded) and return its exit code.
    pub async fn wait(mut self) -> Option<i32> {
        match tokio::time::timeout(LINE_WAIT, self.child.wait()).await {
            Ok(Ok(s)) => s.code(),
            _ => None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Minimal parser for `["ab","01"]` (the peer prints only this shape).
fn parse_json_strings(l: &str) -> Option<Vec<String>> {
    let inner = l.trim().strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return Some(vec![]);
    }
    inner
        .split(',')
        .map(|s| {
            s.trim()
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .map(str::to_owned)
        })
        .collect()
}

/// Decode lowercase hex.
pub fn decode_hex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Encode as lowercase hex.
pub fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
