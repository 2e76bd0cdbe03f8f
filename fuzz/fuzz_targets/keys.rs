//! Certificate files and signature frames from untrusted sources: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmesh::security::Certificate;
use zmesh::security::signing::SignatureFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cert) = Certificate::parse("fuzz", text) {
            // What parses prints back to a certificate with the same keys.
            let again = Certificate::parse("again", &cert.to_text(true)).unwrap();
            assert_eq!(again.public, cert.public);
        }
        let _ = zmesh::security::PublicKey::from_z85(text);
    }
    let _ = SignatureFrame::parse(data);
});
