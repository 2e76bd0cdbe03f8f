//! The `zmesh` CLI driven as a person would, against pyzmq (libzmq) peers.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zmesh_testkit::net::free_endpoint as free_ep;
use zmesh_testkit::peer::PyPeer;

const RUN_LIMIT: Duration = Duration::from_secs(30);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `zmesh args` with `stdin` fed in, bounded by [`RUN_LIMIT`].
async fn zmesh(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("zmesh hung")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn req_talks_to_a_libzmq_rep() {
    let (_py, ep) = PyPeer::start(&[
        "echo",
        "--type",
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "--count",
        "2",
    ])
    .await;
    let r = zmesh(
        &["req", "--connect", &ep, "--timeout", "10", "hello", "world"],
        "",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "hello\nworld\n");
}

#[tokio::test]
async fn rep_echoes_a_libzmq_req() {
    let ep = free_ep();
    let server = tokio::spawn({
        let ep = ep.clone();
        async move {
            zmesh(
                &[
                    "rep",
                    "--bind",
                    &ep,
                    "--echo",
                    "--count",
                    "1",
                    "--timeout",
                    "20",
                ],
                "",
            )
            .await
        }
    });
    let (mut py, _) =
        PyPeer::start(&["send", "--type", "req", "--connect", &ep, "--msg", "6869"]).await;
    assert_eq!(py.message().await, vec![b"hi".to_vec()]);
    let r = server.await.unwrap();
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{}", r.stderr);
}

#[tokio::test]
async fn pull_prints_json_lines_with_binary_frames() {
    let ep = free_ep();
    let server = tokio::spawn({
        let ep = ep.clone();
        async move {
            zmesh(
                &[
                    "pull",
                    "--bind",
                    &ep,
                    "--count",
                    "2",
                    "--output",
                    "json",
                    "--timeout",
                    "20",
                ],
                "",
            )
            .await
        }
    });
    // No wait for the bind: the libzmq peer reconnects until the server is up.
    let (_py, _) = PyPeer::start(&[
        "send",
        "--type",
        "push",
        "--connect",
        &ep,
        "--msg",
        "6b6579,00ff",
        "--msg",
        "",
    ])
    .await;
    let r = server.await.unwrap();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "[\"key\",{\"hex\":\"00ff\"}]\n[\"\"]\n");
}

#[tokio::test]
async fn push_sends_stdin_lines_split_into_frames() {
    let (mut py, ep) = PyPeer::start(&[
        "recv",
        "--type",
        "pull",
        "--bind",
        "tcp://127.0.0.1:0",
        "--count",
        "2",
    ])
    .await;
    let r = zmesh(
        &[
            "push",
            "--connect",
            &ep,
            "--separator",
            "|",
            "--timeout",
            "10",
        ],
        "a|b\nc\n",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(py.message().await, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(py.message().await, vec![b"c".to_vec()]);
}

#[tokio::test]
async fn sub_filters_what_a_libzmq_pub_sends() {
    let (_py, ep) = PyPeer::start(&[
        "pub",
        "--type",
        "pub",
        "--bind",
        "tcp://127.0.0.1:0",
        "--subscribe",
        "wx.",
        "--seconds",
        "20",
    ])
    .await;
    let r = zmesh(
        &[
            "sub",
            "--connect",
            &ep,
            "--subscribe",
            "wx.",
            "--count",
            "3",
            "--timeout",
            "10",
        ],
        "",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.starts_with("wx.")), "{lines:?}");
}

#[tokio::test]
async fn dealer_and_router_and_pair_round_trip() {
    let (_py, ep) =
        PyPeer::start(&["echo", "--type", "router", "--bind", "tcp://127.0.0.1:0"]).await;
    let r = zmesh(
        &[
            "dealer",
            "--connect",
            &ep,
            "--separator",
            "|",
            "--count",
            "1",
            "--timeout",
            "10",
            "x||y",
        ],
        "",
    )
    .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "x||y\n"), "{}", r.stderr);

    let ep = free_ep();
    let server = tokio::spawn({
        let ep = ep.clone();
        async move {
            zmesh(
                &[
                    "router",
                    "--bind",
                    &ep,
                    "--echo",
                    "--count",
                    "1",
                    "--timeout",
                    "20",
                    "--output",
                    "hex",
                ],
                "",
            )
            .await
        }
    });
    let (mut py, _) = PyPeer::start(&[
        "send",
        "--type",
        "dealer",
        "--identity",
        "me",
        "--connect",
        &ep,
        "--msg",
        "01",
    ])
    .await;
    assert_eq!(py.message().await, vec![vec![1u8]]);
    let r = server.await.unwrap();
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "6d65|01\n"),
        "{}",
        r.stderr
    );

    let (_py, ep) = PyPeer::start(&["echo", "--type", "pair", "--bind", "tcp://127.0.0.1:0"]).await;
    let r = zmesh(
        &[
            "pair",
            "--connect",
            &ep,
            "--count",
            "1",
            "--timeout",
            "10",
            "solo",
        ],
        "",
    )
    .await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "solo\n"), "{}", r.stderr);
}

#[tokio::test]
async fn timeouts_and_mistakes_have_distinct_exit_codes() {
    let r = zmesh(
        &[
            "pull",
            "--bind",
            "tcp://127.0.0.1:0",
            "--count",
            "1",
            "--timeout",
            "0.3",
        ],
        "",
    )
    .await;
    assert_eq!(r.code, 1, "timeout: {}", r.stderr);
    assert!(r.stderr.contains("timed out after 0 of 1"), "{}", r.stderr);

    let r = zmesh(&["push", "--connect", "nonsense", "x"], "").await;
    assert_eq!(r.code, 2, "bad endpoint: {}", r.stderr);
    assert!(r.stderr.contains("nonsense"), "{}", r.stderr);

    let r = zmesh(
        &[
            "push",
            "--connect",
            "tcp://127.0.0.1:1",
            "--input",
            "hex",
            "zz",
        ],
        "",
    )
    .await;
    assert_eq!(r.code, 2, "bad hex: {}", r.stderr);
    assert!(r.stderr.contains("not hex"), "{}", r.stderr);

    let r = zmesh(&["pull", "--connect", "tcp://127.0.0.1:1", "x"], "").await;
    assert_eq!(r.code, 2, "PULL cannot send: {}", r.stderr);

    let r = zmesh(&["req"], "").await;
    assert_eq!(r.code, 2, "no endpoint: {}", r.stderr);
}

#[tokio::test]
async fn monitor_shows_a_peer_coming_up() {
    let (_py, ep) =
        PyPeer::start(&["echo", "--type", "router", "--bind", "tcp://127.0.0.1:0"]).await;
    let r = zmesh(
        &["monitor", "--connect", &ep, "--duration", "1.0", "--json"],
        "",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["event"]["to"] == "active"),
        "{}",
        r.stdout
    );
    let last = events.last().unwrap();
    assert_eq!(last["socket"]["peers"][0]["state"], "active");
    assert_eq!(last["socket"]["peers"][0]["zmtp_version"], "3.1");
}

#[tokio::test]
async fn help_teaches_by_example() {
    let r = zmesh(&["--help"], "").await;
    assert_eq!(r.code, 0);
    for needle in ["zmesh rep --bind", "zmesh monitor", "zmesh demo"] {
        assert!(r.stdout.contains(needle), "missing {needle:?} in --help");
    }
    let r = zmesh(&["push", "--help"], "").await;
    assert!(
        r.stdout.contains("--separator") && r.stdout.contains("Examples"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn demo_recovers_from_its_server_being_killed() {
    let r = zmesh(
        &[
            "demo",
            "--duration",
            "6",
            "--kill-at",
            "2",
            "--restart-at",
            "3",
        ],
        "",
    )
    .await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("server node and one broker worker SIGKILLed")
            && r.stdout.contains("traffic resumed after the restart: OK")
            && r.stdout.contains(" 0 failed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("backing-off"),
        "the table shows the backoff"
    );
}
