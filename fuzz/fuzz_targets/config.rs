//! The config file parser: any text gives a config or an error message, never a panic.
#![no_main]

use camrelay::config::{self, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut config = Config::default();
    if let Err(message) = config::parse(&mut config, text, std::path::Path::new("/nonexistent")) {
        assert!(!message.is_empty());
    }
});
