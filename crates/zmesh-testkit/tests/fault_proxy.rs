//! The fault proxy forwards bytes both ways and applies each fault.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zmesh_testkit::fault_proxy::FaultProxy;

async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn echo_once(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).await.unwrap();
    let mut got = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

#[tokio::test]
async fn forwards_delays_corrupts_stalls_and_cuts() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_once(&mut s, b"hello").await, b"hello");

        proxy.set_delay(Duration::from_millis(100));
        let t = tokio::time::Instant::now();
        assert_eq!(echo_once(&mut s, b"slow").await, b"slow");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "two hops, each delayed"
        );
        proxy.set_delay(Duration::ZERO);

        proxy.corrupt_next(1);
        assert_ne!(echo_once(&mut s, b"abcdef").await, b"abcdef");

        proxy.set_stalled(true);
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf))
                .await
                .is_err()
        );
        proxy.set_stalled(false);
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held");

        proxy.cut();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "cut closes the connection");

        proxy.set_refusing(true);
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s2.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "refused connections are closed at once");
    })
    .await
    .unwrap();
}

async fn line(
    out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(10), out.next_line())
        .await
        .expect("a line from the proxy in time")
        .unwrap()
        .expect("the proxy still running")
}

/// The `zmesh-fault-proxy` binary: forwards, answers its stdin commands,
/// and stops when stdin closes.
#[tokio::test]
async fn the_binary_forwards_and_answers_commands_on_stdin() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::Command;

    let upstream = echo_server().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_zmesh-fault-proxy"))
        .args(["--upstream", &upstream.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = line(&mut out).await;
    let endpoint = listening
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("first line {listening:?}"));
    let addr = endpoint.trim_start_matches("tcp://");

    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut s, b"through").await, b"through");
    stdin.write_all(b"status\n").await.unwrap();
    assert_eq!(line(&mut out).await, "ok live=1 accepted=1");
    stdin.write_all(b"cut\n").await.unwrap();
    assert!(line(&mut out).await.starts_with("ok "));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the cut connection ends: {read:?}"
    );

    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the proxy stops when stdin closes")
        .unwrap();
    assert!(status.success());
}
