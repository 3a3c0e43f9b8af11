//! Fuzz target `route`: see [`redisforge_fuzz::targets::route`] for what it checks.
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| redisforge_fuzz::targets::route(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    redisforge_fuzz::replay::main("route", redisforge_fuzz::targets::route)
}
