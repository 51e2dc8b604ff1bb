//! The frame decoder never panics, and whatever it accepts re-encodes to
//! the same bytes (but for the link-level credited flag, which is not part
//! of the header and the runtime sets per hop). Link frames never panic
//! either.
//!
//! `cargo +nightly fuzz run header`
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_network::wire::{self, Frame, Header, LinkFrame};

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(data, 1 << 20);
    let _ = LinkFrame::decode(data);
    let _ = wire::source_of(data);
    if let Ok(f) = Frame::decode(data, 1 << 20) {
        let again = Frame::encode(&f.header, f.payload).expect("decoded payloads are small");
        let mut plain = data.to_vec();
        wire::set_credited(&mut plain, false);
        assert_eq!(again, plain, "decode then encode is the identity");
        assert_eq!(wire::is_credited(data), data != plain.as_slice());
    }
});
