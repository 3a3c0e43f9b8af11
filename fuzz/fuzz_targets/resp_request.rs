//! Fuzz target `resp_request`: see [`redisforge_fuzz::targets::resp_request`] for what it checks.
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| redisforge_fuzz::targets::resp_request(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    redisforge_fuzz::replay::main("resp_request", redisforge_fuzz::targets::resp_request)
}
