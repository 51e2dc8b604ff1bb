//! The frame decoder never panics, and whatever it accepts re-encodes to
//! the same bytes.
//!
//! `cargo +nightly fuzz run header`
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_network::wire::{Frame, Header};

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(data, 1 << 20);
    if let Ok(f) = Frame::decode(data, 1 << 20) {
        let again = Frame::encode(&f.header, f.payload).expect("decoded payloads are small");
        assert_eq!(again, data, "decode then encode is the identity");
    }
});
