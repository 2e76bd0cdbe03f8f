//! The text form of ZeroMQ frames, for people and shell pipes.
//!
//! Input (one message per line):
//! - [`InputFormat::Text`]: the line's bytes; with a separator, split into frames on it.
//! - [`InputFormat::Hex`]: each frame in hex (`48656c6c6f`); empty means an empty frame.
//! - [`InputFormat::Json`]: a JSON array, each item a string (UTF-8 frame) or
//!   `{"hex": "..."}` (binary frame) — exactly what [`OutputFormat::Json`] prints.
//!
//! ```
//! use zmesh::frames::{parse_line, format_frames, InputFormat, OutputFormat};
//! let frames = parse_line("key|value", InputFormat::Text, Some("|")).unwrap();
//! assert_eq!(frames, vec!["key".as_bytes(), b"value"]);
//! let json = format_frames(&frames, OutputFormat::Json, "|");
//! assert_eq!(json, r#"["key","value"]"#);
//! assert_eq!(parse_line(&json, InputFormat::Json, None).unwrap(), frames);
//! ```

use bytes::Bytes;

/// How input lines are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Raw text.
    Text,
    /// Hex digits per frame.
    Hex,
    /// A JSON array per message.
    Json,
}

/// How received messages are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Frames as text (non-UTF-8 bytes escaped as `\xHH`), joined by the separator.
    Text,
    /// Frames in hex, joined by the separator.
    Hex,
    /// One JSON array per message.
    Json,
}

/// Longest input line accepted (bytes): a guard against unbounded memory on bad input.
pub const LINE_LEN_MAX: usize = 64 * 1024 * 1024;

/// Most frames one input line may hold.
pub const FRAMES_PER_LINE_MAX: usize = 10_000;

/// An input line that is not valid in its format. The caller's (or the
/// upstream program's) input is at fault; the line number says where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Bad hex.
    #[error("frame {frame}: not hex ({reason})")]
    Hex {
        /// Zero-based frame index.
        frame: usize,
        /// What is wrong.
        reason: String,
    },
    /// Bad JSON, or JSON of the wrong shape.
    #[error("not a JSON array of frames: {0}")]
    Json(String),
    /// Too long or too many frames.
    #[error("line too large: {0}")]
    TooLarge(String),
}

/// Parse one line (without its newline) into frames.
pub fn parse_line(
    line: &str,
    format: InputFormat,
    separator: Option<&str>,
) -> Result<Vec<Bytes>, FrameError> {
    if line.len() > LINE_LEN_MAX {
        return Err(FrameError::TooLarge(format!(
            "{} bytes > {LINE_LEN_MAX}",
            line.len()
        )));
    }
    let pieces: Vec<&str> = match (format, separator) {
        (InputFormat::Json, _) => return parse_json(line),
        (_, Some(sep)) if !sep.is_empty() => line.split(sep).collect(),
        _ => vec![line],
    };
    if pieces.len() > FRAMES_PER_LINE_MAX {
        return Err(FrameError::TooLarge(format!(
            "{} frames > {FRAMES_PER_LINE_MAX}",
            pieces.len()
        )));
    }
    match format {
        InputFormat::Text => Ok(pieces
            .into_iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()),
        InputFormat::Hex => pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                hex::decode(p.trim())
                    .map(Bytes::from)
                    .map_err(|e| FrameError::Hex {
                        frame: i,
                        reason: e.to_string(),
                    })
            })
            .collect(),
        InputFormat::Json => unreachable!("handled above"),
    }
}

fn parse_json(line: &str) -> Result<Vec<Bytes>, FrameError> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| FrameError::Json(e.to_string()))?;
    let serde_json::Value::Array(items) = v else {
        return Err(FrameError::Json("expected an array".into()));
    };
    if items.len() > FRAMES_PER_LINE_MAX {
        return Err(FrameError::TooLarge(format!(
            "{} frames > {FRAMES_PER_LINE_MAX}",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            serde_json::Value::String(s) => Ok(Bytes::from(s)),
            serde_json::Value::Object(o) => match o.get("hex") {
                Some(serde_json::Value::String(h)) if o.len() == 1 => hex::decode(h)
                    .map(Bytes::from)
                    .map_err(|e| FrameError::Hex {
                        frame: i,
                        reason: e.to_string(),
                    }),
                _ => Err(FrameError::Json(format!(
                    "frame {i}: object must be {{\"hex\": \"...\"}}"
                ))),
            },
            other => Err(FrameError::Json(format!(
                "frame {i}: expected a string, got {other}"
            ))),
        })
        .collect()
}

/// Print frames in `format`; `separator` joins frames for text and hex.
pub fn format_frames<B: AsRef<[u8]>>(
    frames: &[B],
    format: OutputFormat,
    separator: &str,
) -> String {
    match format {
        OutputFormat::Text => frames
            .iter()
            .map(|f| escape_text(f.as_ref()))
            .collect::<Vec<_>>()
            .join(separator),
        OutputFormat::Hex => frames
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join(separator),
        OutputFormat::Json => {
            let items: Vec<serde_json::Value> = frames
                .iter()
                .map(|f| match std::str::from_utf8(f.as_ref()) {
                    Ok(s) => serde_json::Value::String(s.to_owned()),
                    Err(_) => serde_json::json!({ "hex": hex::encode(f) }),
                })
                .collect();
            serde_json::Value::Array(items).to_string()
        }
    }
}

/// UTF-8 text as is, other bytes and control characters as `\xHH`.
fn escape_text(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_on_separator_and_keeps_empty_frames() {
        let f = parse_line("a||b|", InputFormat::Text, Some("|")).unwrap();
        assert_eq!(f, vec!["a".as_bytes(), b"", b"b", b""]);
    }

    #[test]
    fn text_without_separator_is_one_frame() {
        let f = parse_line("a|b", InputFormat::Text, None).unwrap();
        assert_eq!(f, vec!["a|b".as_bytes()]);
    }

    #[test]
    fn hex_rejects_odd_digits_with_frame_index() {
        let e = parse_line("00ff|abc", InputFormat::Hex, Some("|")).unwrap_err();
        assert!(matches!(e, FrameError::Hex { frame: 1, .. }), "{e:?}");
    }

    #[test]
    fn json_round_trips_binary_frames() {
        let frames = vec![
            Bytes::from_static(b"\xff\x00"),
            Bytes::from_static(b"ok"),
            Bytes::new(),
        ];
        let line = format_frames(&frames, OutputFormat::Json, "");
        assert_eq!(parse_line(&line, InputFormat::Json, None).unwrap(), frames);
    }

    #[test]
    fn json_rejects_wrong_shapes() {
        for bad in [
            "{}",
            "[1]",
            r#"[{"hex":"zz"}]"#,
            r#"[{"hex":"00","x":1}]"#,
            "[",
            "",
        ] {
            assert!(parse_line(bad, InputFormat::Json, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_output_escapes_controls_and_invalid_utf8() {
        let s = format_frames(&[&b"a\n\xffb"[..]], OutputFormat::Text, "|");
        assert_eq!(s, "a\\x0a\\xffb");
    }
}
