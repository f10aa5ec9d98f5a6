#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| privcomm_fuzz::client_frame(data));
