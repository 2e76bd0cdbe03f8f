//! JSON, MessagePack and Protobuf payloads made by zmesh are read by Python's
//! own libraries (json, msgpack, protobuf), and what Python writes back is read by zmesh.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zmesh::codec::{Decode, Encode, Json, MsgPack, Protobuf};
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_testkit::peer::PyPeer;

#[allow(dead_code, clippy::all)]
mod demo {
    include!(concat!(env!("OUT_DIR"), "/zmesh.demo.rs"));
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Order {
    id: u64,
    item: String,
    qty: Vec<u32>,
    note: Option<String>,
}

async fn ask(req: &Socket, format: &str, payload: Bytes) -> Bytes {
    req.send(Message::from_frames([
        Bytes::from(format.to_owned()),
        payload,
    ]))
    .await
    .unwrap();
    let reply = req.recv_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(reply.frame(0).unwrap(), format.as_bytes());
    reply.frame(1).unwrap()
}

#[tokio::test]
async fn payloads_round_trip_through_python_libraries() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (_py, ep) = PyPeer::start_script("codec_peer.py", &["3"]).await;
        let req = Socket::new(SocketType::Req, SocketOptions::default()).unwrap();
        req.connect(&ep).await.unwrap();
        let order = Order {
            id: 41,
            item: "tea ☕".into(),
            qty: vec![1, 2],
            note: None,
        };

        let back = ask(
            &req,
            "json",
            <Order as Encode<Json>>::encode(&order).unwrap(),
        )
        .await;
        let got: Order = <Order as Decode<Json>>::decode(&back).unwrap();
        assert_eq!(
            got,
            Order {
                id: 42,
                ..order.clone()
            }
        );

        let back = ask(
            &req,
            "msgpack",
            <Order as Encode<MsgPack>>::encode(&order).unwrap(),
        )
        .await;
        let got: Order = <Order as Decode<MsgPack>>::decode(&back).unwrap();
        assert_eq!(
            got,
            Order {
                id: 42,
                ..order.clone()
            }
        );

        let job = demo::Job {
            id: 7,
            kind: "resize".into(),
            payload: vec![0, 255, 1],
            tags: vec!["a".into()],
        };
        let back = ask(
            &req,
            "protobuf",
            <demo::Job as Encode<Protobuf>>::encode(&job).unwrap(),
        )
        .await;
        let got: demo::Job = <demo::Job as Decode<Protobuf>>::decode(&back).unwrap();
        assert_eq!(
            got,
            demo::Job {
                id: 8,
                tags: vec!["a".into(), "python".into()],
                ..job
            }
        );
    })
    .await
    .unwrap();
}

#[test]
fn decode_errors_blame_the_payload() {
    let e = <Order as Decode<MsgPack>>::decode(b"\xc1").unwrap_err();
    assert!(
        e.to_string().contains("cannot decode 1 bytes as msgpack"),
        "{e}"
    );
    let e = <demo::Job as Decode<Protobuf>>::decode(b"\xff\xff").unwrap_err();
    assert!(e.to_string().contains("protobuf"), "{e}");
}
