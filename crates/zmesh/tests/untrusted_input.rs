//! The fuzz targets' invariants on every CI run: seeded random and mutated
//! inputs to the frame parser and the codecs give errors, never panics, and
//! whatever parses round-trips.

use zmesh::codec::{Decode, Encode, Format, Json, MsgPack};
use zmesh::frames::{InputFormat, OutputFormat, format_frames, parse_line};

use zmesh_testkit::rng::SeededRng;

const SEEDS: &[&str] = &[
    "metadata\n    name = \"a\"\ncurve\n    public-key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n",
    "ZMS1\u{1}\u{1}a",
    r#"["a",{"hex":"00ff"},""]"#,
    "a|b||c",
    "00ff|6869|",
    r#"{"id":1,"item":"tea","qty":[1,2]}"#,
    "\u{82}\u{a2}id",
];

#[test]
fn inputs_never_panic() {
    let alphabet: Vec<u8> =
        b"[]{}\",:|0123456789abcdefhx \\\x00\xff\xc1\x82\xa2=\n ZMS1curvpkey-".to_vec();
    let mut rng = SeededRng::new(0x5eed_1234_abcd_0001);
    for round in 0..20_000 {
        let mut input = if round % 2 == 0 {
            rng.bytes(&alphabet, 64)
        } else {
            // Mutate a seed: flip, insert or cut at random places.
            let mut s = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
            for _ in 0..(rng.next_u64() % 4) {
                let i = (rng.next_u64() as usize) % (s.len() + 1);
                match rng.next_u64() % 3 {
                    0 if i < s.len() => s[i] ^= 1 << (rng.next_u64() % 8),
                    1 => s.insert(i, alphabet[(rng.next_u64() as usize) % alphabet.len()]),
                    _ => s.truncate(i),
                }
            }
            s
        };
        check_frames(&input);
        check_codecs(&input);
        check_keys(&input);
        input.clear();
    }
}

fn check_frames(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    for format in [InputFormat::Text, InputFormat::Hex, InputFormat::Json] {
        if let Ok(frames) = parse_line(line, format, Some("|")) {
            let json = format_frames(&frames, OutputFormat::Json, "|");
            assert_eq!(
                parse_line(&json, InputFormat::Json, None).unwrap(),
                frames,
                "input {line:?}"
            );
        }
    }
}

fn check_codecs(data: &[u8]) {
    if let Ok(v) = <serde_json::Value as Decode<Json>>::decode(data) {
        let bytes = <serde_json::Value as Encode<MsgPack>>::encode(&v).unwrap();
        assert_eq!(
            <serde_json::Value as Decode<MsgPack>>::decode(&bytes).unwrap(),
            v
        );
    }
    if let Ok(v) = <serde_json::Value as Decode<MsgPack>>::decode(data) {
        let _ = <serde_json::Value as Encode<Json>>::encode(&v);
    }
    let _ = Format::MsgPack.transcode(Format::Json, data);
}

fn check_keys(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cert) = zmesh::security::Certificate::parse("input", text)
    {
        let again = zmesh::security::Certificate::parse("again", &cert.to_text(true)).unwrap();
        assert_eq!(again.public, cert.public);
    }
    let _ = zmesh::security::signing::SignatureFrame::parse(data);
}

#[test]
fn oversize_lines_are_refused_not_buffered() {
    let line = "a|".repeat(zmesh::frames::FRAMES_PER_LINE_MAX + 1);
    let e = parse_line(&line, InputFormat::Text, Some("|")).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
}
