//! Fuzz target `resp_scan`: see [`redisforge_fuzz::targets::resp_scan`] for what it checks.
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| redisforge_fuzz::targets::resp_scan(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    redisforge_fuzz::replay::main("resp_scan", redisforge_fuzz::targets::resp_scan)
}
