//! The brokerless reliable channel with real processes: a file moved across
//! a fault proxy that delays, stalls, cuts and corrupts, while the sender and
//! then the receiver are SIGKILLed and restarted. The output must equal the
//! input byte for byte: every message once, in order.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::temp_dir;
use tokio::process::{Child, Command};
use zmesh_testkit::fault_proxy::FaultProxy;
use zmesh_testkit::net::{bounded, free_port};

fn zmesh(args: &[&str], cwd: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn zmesh")
}

fn input(len: usize) -> Vec<u8> {
    // Deterministic, incompressible enough, and every chunk different.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_file_crosses_faults_and_crashes_exactly_once_in_order() {
    bounded(Duration::from_secs(150), async {
        let d = temp_dir("faults");
        let data = input(12 << 20);
        std::fs::write(d.join("in.bin"), &data).unwrap();
        let port = free_port();
        let recv_ep = format!("tcp://127.0.0.1:{port}");
        let recv_args = [
            "channel", "recv", "--bind", &recv_ep, "--out", "out.bin", "--state", "state",
        ];
        let mut receiver = zmesh(&recv_args, &d);
        let proxy = FaultProxy::start(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let send_ep = proxy.endpoint();
        // A small outbox: the sender is killed with most of the file still
        // unread, so its restart must resume reading at the right byte.
        let send_args = [
            "channel",
            "send",
            "--connect",
            &send_ep,
            "--outbox",
            "outbox",
            "--outbox-max",
            "8",
            "in.bin",
        ];
        let mut sender = zmesh(&send_args, &d);
        let progress = |d: &Path| std::fs::metadata(d.join("out.bin")).map_or(0, |m| m.len());
        let wait_for = |target: u64| {
            let d = d.clone();
            async move {
                let t = Instant::now();
                while progress(&d) < target && t.elapsed() < Duration::from_secs(30) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        proxy.set_delay(Duration::from_millis(2));
        wait_for(1 << 20).await;
        proxy.cut();
        wait_for(2 << 20).await;
        proxy.set_stalled(true);
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.set_stalled(false);
        wait_for(3 << 20).await;
        sender.kill().await.unwrap();
        sender = zmesh(&send_args, &d);
        wait_for(5 << 20).await;
        receiver.kill().await.unwrap();
        proxy.cut();
        receiver = zmesh(&recv_args, &d);
        wait_for(7 << 20).await;
        proxy.corrupt_next(3);
        wait_for(9 << 20).await;
        proxy.cut();
        let sent = tokio::time::timeout(Duration::from_secs(90), sender.wait()).await;
        assert!(matches!(sent, Ok(Ok(s)) if s.success()), "sender: {sent:?}");
        let got = tokio::time::timeout(Duration::from_secs(30), receiver.wait()).await;
        assert!(matches!(got, Ok(Ok(s)) if s.success()), "receiver: {got:?}");
        let out = std::fs::read(d.join("out.bin")).unwrap();
        assert_eq!(out.len(), data.len(), "length");
        assert!(out == data, "content differs");
        let _ = std::fs::remove_dir_all(&d);
    })
    .await;
}
