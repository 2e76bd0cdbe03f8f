//! Helpers shared by the zmesh-cli test files.

use std::process::Stdio;

#[allow(dead_code)]
pub mod admin;
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

/// The rest of a child's stderr, line by line.
#[allow(dead_code)]
pub type LogLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// `zmesh broker <args>`, returned once it says "listening" (its stores are
/// open and its admin port bound by then), with the rest of its stderr.
#[allow(dead_code)]
pub async fn broker_listening(args: &[&str]) -> (Child, LogLines) {
    use tokio::io::AsyncBufReadExt;
    let mut b = Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .arg("broker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn zmesh broker");
    let mut lines = tokio::io::BufReader::new(b.stderr.take().expect("piped")).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if l.contains("listening") {
            break;
        }
    }
    (b, lines)
}
