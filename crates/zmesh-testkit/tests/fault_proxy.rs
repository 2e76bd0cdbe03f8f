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
