//! Replay mode: run a target on its checked-in corpus, then on deterministic mutations of it.
//!
//! For machines without a nightly toolchain (libFuzzer needs one). Mutations come from a seeded
//! xorshift generator, so a run is reproducible from its seed; an input that panics is written to
//! `fuzz/artifacts/<target>/crash-<hash>` before the panic ends the process, and passing that file
//! as an argument replays it alone.

use std::panic;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hard cap on a replay run, whatever `--seconds` says.
const MAX_SECONDS: u64 = 60;
/// Largest input a mutation may grow.
const MAX_INPUT: usize = 64 * 1024;

/// Byte strings a mutation may insert: RESP syntax, lengths at the edges, hash tags, commands.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"*",
    b"$",
    b"+",
    b"-",
    b":",
    b"%",
    b"~",
    b">",
    b"|",
    b"_",
    b",",
    b"#",
    b"(",
    b"=",
    b"!",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"9",
    b"?",
    b"65536",
    b"18446744073709551615",
    b"99999999999999999999",
    b"{",
    b"}",
    b"{tag}",
    b"\"",
    b"'",
    b"\\x41",
    b"\\",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"*2\r\n",
    b"$3\r\n",
    b"*3\r\n$4\r\nMGET\r\n",
    b"*5\r\n$4\r\nMSET\r\n",
    b"$3\r\nDEL\r\n",
    b"$6\r\nEXISTS\r\n",
    b"$4\r\nTOUCH\r\n",
    b"$3\r\nGET\r\n",
    b"$4\r\nEVAL\r\n",
    b"$6\r\nXREAD\r\n",
    b"$7\r\nSTREAMS\r\n",
    b"$6\r\nobject\r\n",
];

/// The input being run, for the panic hook.
static CURRENT: Mutex<Option<(String, Vec<u8>)>> = Mutex::new(None);

/// A small deterministic generator (xorshift64*). The test harness has the same one
/// (`tests/support/rng.rs`); this package is standalone on purpose (see its Cargo.toml), so it
/// keeps a copy rather than depend on the harness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

struct Options {
    seconds: u64,
    runs: Option<u64>,
    seed: u64,
    paths: Vec<PathBuf>,
}

fn usage(name: &str) -> String {
    format!(
        "usage: {name} --replay [--seconds N (default 20, at most {MAX_SECONDS})] [--runs N] [--seed N] [FILE|DIR ...]\n\
         Runs the corpus (default fuzz/corpus/{name}) and then mutations of it until the time or run count is reached."
    )
}

fn parse_args(name: &str) -> Result<Options, String> {
    let mut opts = Options { seconds: 20, runs: None, seed: 0x5EED, paths: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            args.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{what} needs a number\n{}", usage(name)))
        };
        match arg.as_str() {
            "--replay" => {}
            "--seconds" => opts.seconds = number("--seconds")?.min(MAX_SECONDS),
            "--runs" => opts.runs = Some(number("--runs")?),
            "--seed" => opts.seed = number("--seed")?,
            "-h" | "--help" => return Err(usage(name)),
            path if !path.starts_with('-') => opts.paths.push(PathBuf::from(path)),
            other => return Err(format!("unknown argument {other}\n{}", usage(name))),
        }
    }
    Ok(opts)
}

/// Every file under the given paths (directories one level deep), sorted for reproducibility.
fn load_inputs(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()));
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(&f).map(|b| (f.display().to_string(), b)).map_err(|e| format!("{}: {e}", f.display())))
        .collect()
}

/// One to eight random edits of `input`, sometimes splicing in part of another corpus input.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 if !out.is_empty() => {
                let len = 1 + rng.below(16.min(out.len() - at.min(out.len() - 1)));
                let start = at.min(out.len() - 1);
                out.drain(start..(start + len).min(out.len()));
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if !out.is_empty() => {
                // Repeat a chunk: pipelines, nested aggregates.
                let start = rng.below(out.len());
                let len = 1 + rng.below(64.min(out.len() - start));
                let chunk = out[start..start + len].to_vec();
                out.splice(at..at, chunk);
            }
            5 => {
                let (_, other) = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let len = 1 + rng.below(other.len() - start);
                    out.splice(at..at, other[start..start + len].iter().copied());
                }
            }
            _ => {
                // A random decimal where digits likely are: lengths and counts.
                let n = match rng.below(4) {
                    0 => rng.below(10) as u64,
                    1 => rng.below(70_000) as u64,
                    2 => u64::MAX - rng.below(3) as u64,
                    _ => rng.next(),
                };
                out.splice(at..at, n.to_string().into_bytes());
            }
        }
        out.truncate(MAX_INPUT);
    }
    out
}

fn crash_path(name: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name for the same input.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts").join(name).join(format!("crash-{hash:016x}"))
}

fn run_one(target: fn(&[u8]), label: &str, input: &[u8]) {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((label.to_owned(), input.to_vec()));
    target(input);
}

/// Runs target `name` in replay mode; see the module docs.
pub fn main(name: &'static str, target: fn(&[u8])) -> ExitCode {
    let opts = match parse_args(name) {
        Ok(opts) => opts,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let explicit = !opts.paths.is_empty();
    let paths = if explicit {
        opts.paths.clone()
    } else {
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name)]
    };
    let corpus = match load_inputs(&paths) {
        Ok(corpus) if !corpus.is_empty() => corpus,
        Ok(_) => {
            eprintln!("{name}: no corpus files in {paths:?}");
            return ExitCode::from(2);
        }
        Err(message) => {
            eprintln!("{name}: {message}");
            return ExitCode::from(2);
        }
    };
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Some((label, input)) = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let path = crash_path(name, &input);
            let saved = path.parent().map(std::fs::create_dir_all).is_some_and(|r| r.is_ok())
                && std::fs::write(&path, &input).is_ok();
            eprintln!("{name}: failing input ({label}, {} bytes): {:?}", input.len(), String::from_utf8_lossy(&input));
            if saved {
                eprintln!("{name}: saved to {} (replay: {name} --replay {})", path.display(), path.display());
            }
        }
        default_hook(info);
    }));

    let started = Instant::now();
    for (label, input) in &corpus {
        run_one(target, label, input);
    }
    // Files named on the command line are replayed alone (a saved crash, a libFuzzer artifact).
    let runs = if explicit { Some(0) } else { opts.runs };
    let deadline = started + Duration::from_secs(opts.seconds.min(MAX_SECONDS));
    let mut rng = Rng(opts.seed | 1);
    let mut mutated = 0u64;
    while runs.is_none_or(|r| mutated < r) && (!mutated.is_multiple_of(256) || Instant::now() < deadline) {
        let (_, base) = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        run_one(target, &format!("mutation {mutated} of seed {}", opts.seed), &input);
        mutated += 1;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{name}: {} corpus inputs + {mutated} mutations (seed {}) in {took:.1} s, {:.0} runs/s, no failure",
        corpus.len(),
        opts.seed,
        (corpus.len() as u64 + mutated) as f64 / took.max(1e-9)
    );
    ExitCode::SUCCESS
}
