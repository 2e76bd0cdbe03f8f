//! The CLI's frame input parser: any line, any format, any separator — an error, never a panic,
//! and what parses prints back to the same frames in JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmesh::frames::{InputFormat, OutputFormat, format_frames, parse_line};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (sep, line) = s.split_once('\n').unwrap_or(("|", s));
    for format in [InputFormat::Text, InputFormat::Hex, InputFormat::Json] {
        if let Ok(frames) = parse_line(line, format, Some(sep)) {
            let json = format_frames(&frames, OutputFormat::Json, sep);
            assert_eq!(parse_line(&json, InputFormat::Json, None).unwrap(), frames);
        }
    }
});
