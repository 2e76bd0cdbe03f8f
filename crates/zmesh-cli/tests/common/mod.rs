//! Helpers shared by the zmesh-cli test files.

use std::process::Stdio;

#[allow(dead_code)]
pub mod security;

use tokio::process::{Child, Command};

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
