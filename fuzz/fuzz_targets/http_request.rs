//! The HTTP request head parser: any bytes give a request, "need more", or an error with a
//! status; a parsed request never claims more bytes than it was given.
#![no_main]

use camrelay::http::request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match request::parse(data) {
        Ok(Some((consumed, req))) => {
            assert!(consumed <= data.len());
            let _ = (req.path(), req.keep_alive(), req.body_length(), req.query_param("key"));
        }
        Ok(None) => assert!(data.len() <= request::MAX_HEAD_BYTES),
        Err(e) => assert!((400..500).contains(&e.status())),
    }
});
