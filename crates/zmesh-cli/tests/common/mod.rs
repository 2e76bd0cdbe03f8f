//! Helpers shared by the zmesh-cli test files.

use std::process::Stdio;

#[allow(dead_code)]
pub mod admin;
#[allow(dead_code)]
pub mod cluster;
#[allow(dead_code)]
pub mod history;
#[allow(dead_code)]
pub mod inproc;
#[allow(dead_code)]
pub mod security;

use tokio::process::{Child, Command};

/// A fresh directory for one test: named after the test file, `tag` and
/// this process, emptied first.
#[allow(dead_code)]
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "zmesh-{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `zmesh <args>` as a child process with no stdio, killed on drop.
#[allow(dead_code)]
pub fn zmesh(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn zmesh")
}

/// `zmesh <args>` run to its end; what it printed and how it exited.
#[allow(dead_code)]
pub async fn zmesh_output(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run zmesh")
}

/// `zmesh <args>`, which must exit 0 (else its stderr is shown); its stdout.
#[allow(dead_code)]
pub async fn zmesh_stdout(args: &[&str]) -> String {
    let out = zmesh_output(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "zmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `tests/python/<script> <args>` with the pyzmq interpreter, which must
/// exit 0 (else its output is shown); its stdout.
#[allow(dead_code)]
pub async fn python_stdout(script: &str, args: &[&str]) -> String {
    let out = Command::new(zmesh_testkit::python::interpreter())
        .arg(zmesh_testkit::python::script(script))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A child's stderr, line by line. A task reads it as it comes, so a child
/// that logs more than a pipe holds never blocks on a test that is not
/// reading.
#[allow(dead_code)]
pub struct LogLines {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Lines read already, given again first.
    again: std::collections::VecDeque<String>,
    /// The last lines handed out, for a failure's message.
    recent: std::collections::VecDeque<String>,
}

#[allow(dead_code)]
impl LogLines {
    fn drain(stderr: tokio::process::ChildStderr) -> LogLines {
        use tokio::io::AsyncBufReadExt;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    // Nobody reads any more; keep draining the pipe.
                    while let Ok(Some(_)) = lines.next_line().await {}
                    return;
                }
            }
        });
        LogLines {
            lines: rx,
            again: Default::default(),
            recent: Default::default(),
        }
    }

    fn handed_out(&mut self, line: Option<String>) -> Option<String> {
        if let Some(line) = &line {
            if self.recent.len() == 20 {
                self.recent.pop_front();
            }
            self.recent.push_back(line.clone());
        }
        line
    }

    /// The last lines handed out (up to 20), for a failure's message.
    pub fn recent(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }

    /// The next line if one has come already.
    pub fn try_next_line(&mut self) -> Option<String> {
        let line = self
            .again
            .pop_front()
            .or_else(|| self.lines.try_recv().ok());
        self.handed_out(line)
    }

    /// The next line; `Ok(None)` once the child closed its stderr.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        let line = match self.again.pop_front() {
            Some(line) => Some(line),
            None => self.lines.recv().await,
        };
        Ok(self.handed_out(line))
    }
}

/// `zmesh broker <args>`, returned once it says "listening" (its stores are
/// open and its admin port bound by then), with its stderr: the lines
/// before "listening" come first again.
#[allow(dead_code)]
pub async fn broker_listening(args: &[&str]) -> (Child, LogLines) {
    let mut b = Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .arg("broker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn zmesh broker");
    let mut lines = LogLines::drain(b.stderr.take().expect("piped"));
    let mut before = std::collections::VecDeque::new();
    while let Ok(Some(l)) = lines.next_line().await {
        let listening = l.contains("listening");
        before.push_back(l);
        if listening {
            break;
        }
    }
    lines.again = before;
    (b, lines)
}
