//! What the store tests share: a stream store driven as the broker's loop
//! drives it, and fresh directories.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use zmesh::clock::ManualClock;
use zmesh_broker::storage::Sends;
use zmesh_broker::stream::StreamStore;
use zmesh_wire::queue::proto::PROTOCOL as QUEUE_PROTOCOL;
use zmesh_wire::stream::proto::PROTOCOL as STREAM_PROTOCOL;

pub fn peer(name: &str) -> Bytes {
    Bytes::from(name.to_owned())
}

/// A fresh directory for one test, emptied first.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("zmesh-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn stream_frames(parts: &[&str]) -> Vec<Bytes> {
    let mut f = vec![Bytes::new(), Bytes::from_static(STREAM_PROTOCOL)];
    f.extend(parts.iter().map(|p| Bytes::from(p.to_string())));
    f
}

pub fn queue_frames(parts: &[&str]) -> Vec<Bytes> {
    let mut f = vec![Bytes::new(), Bytes::from_static(QUEUE_PROTOCOL)];
    f.extend(parts.iter().map(|p| Bytes::from(p.to_string())));
    f
}

/// A frame as text (lossy).
pub fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A body tied to message `id`, of varied length, so a body under the wrong
/// id shows.
pub fn numbered_body(id: u64) -> String {
    format!("m{id}:{}", "x".repeat((id * 37 % 200) as usize))
}

/// A stream store driven like the broker's loop drives it.
pub struct Streams {
    pub store: StreamStore,
    pub clock: ManualClock,
    pub sent: Sends,
}

impl Streams {
    pub fn send(&mut self, from: &str, parts: &[&str]) {
        let s = self.store.handle(&peer(from), &stream_frames(parts));
        self.sent.extend(s);
    }

    pub async fn sync(&mut self) {
        let s = self.store.end_batch();
        self.sent.extend(s);
        while !self.store.idle() {
            let done = tokio::time::timeout(Duration::from_secs(10), self.store.disk_done())
                .await
                .expect("the disk answers");
            let s = self.store.on_disk_done(done);
            self.sent.extend(s);
            let s = self.store.end_batch();
            self.sent.extend(s);
        }
    }

    /// `secs` seconds, one at a time: the tick, a HEARTBEAT from each of
    /// `subscribers`, and what the disk then finishes (reads, syncs).
    pub async fn pass(&mut self, secs: u64, subscribers: &[&str]) {
        for _ in 0..secs {
            self.clock.advance(Duration::from_secs(1));
            let s = self.store.tick();
            self.sent.extend(s);
            for c in subscribers {
                self.send(c, &["HEARTBEAT"]);
            }
            self.sync().await;
        }
    }

    /// (seq, time_ms, body) of every MSG sent to `to`, taken out.
    pub fn messages(&mut self, to: &str) -> Vec<(u64, u64, String)> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(p, f)| p == &peer(to) && f.get(2).is_some_and(|c| c == "MSG"));
        self.sent = rest;
        mine.iter()
            .map(|(_, f)| {
                let text = |i: usize| String::from_utf8(f[i].to_vec()).unwrap();
                (
                    text(4).parse().unwrap(),
                    text(6).parse().unwrap(),
                    text(f.len() - 1),
                )
            })
            .collect()
    }

    /// How many HEARTBEATs `to` got, taken out.
    pub fn heartbeats(&mut self, to: &str) -> usize {
        let before = self.sent.len();
        self.sent
            .retain(|(p, f)| !(p == &peer(to) && f.get(2).is_some_and(|c| c == "HEARTBEAT")));
        before - self.sent.len()
    }

    /// The frames of every `cmd` sent to `to`, taken out.
    pub fn take(&mut self, to: &str, cmd: &str) -> Vec<Vec<Bytes>> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(p, f)| p == &peer(to) && f.get(2).is_some_and(|c| c == cmd.as_bytes()));
        self.sent = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    pub fn subscribers(&self) -> u64 {
        self.store.core().infos()[0]["subscribers"]
            .as_u64()
            .unwrap()
    }
}

/// Set this process's file size limit (`None`: unlimited): a full disk for
/// the tests that have a binary of their own.
pub fn limit_file_size(bytes: Option<u64>) {
    let limit = bytes.map_or("unlimited".to_owned(), |b| b.to_string());
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            // The soft limit only: raising it again needs no privilege.
            &format!("--fsize={limit}:"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --fsize={limit}");
}

/// The largest file under `dir`, in bytes.
pub fn largest_file(dir: &std::path::Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())
        } else {
            meta.len()
        });
    }
    largest
}
