#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::layer_apply_overlay(data));
