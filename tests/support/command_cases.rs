//! The case file of the command walk (`tests/command_walk/cases.txt`, whose header documents the
//! format) and the placeholders its arguments use; the command walk and the ACL differential run it.

/// The case file's text.
pub const CASES: &str = include_str!("../command_walk/cases.txt");

/// How the walk judges a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through the proxy and on the owning node, every `run` reply is the same bytes.
    Same,
    /// As `Same`, but only the shape is compared ([`crate::resp::Frame::shape`]): the values differ
    /// from run to run (time, randomness, idle times, node-local counters).
    Shape,
    /// As `Same`, but only the reply's type byte is compared (free text such as INFO).
    Type,
    /// Keyless and node-specific: the proxy's reply is the same bytes as some master's.
    AnyNode,
    /// Refused by design: `-ERR unsupported command '…' in proxy: …`, and the connection still works.
    Refuse,
    /// Answered by the proxy differently from a node on purpose: the `expect` replies, exactly.
    Expect,
    /// SCAN: iterated to the end through the proxy and on every master; the same set of keys.
    Scan,
    /// Operator diagnostics answered per master (LATENCY, MEMORY STATS): the proxy's reply is keyed
    /// by every master's address (a RESP2 flat array, a RESP3 map), and each master's value has the
    /// type of that master's own reply.
    PerNode,
}

impl Mode {
    fn from_name(name: &str) -> Option<Mode> {
        Some(match name {
            "same" => Mode::Same,
            "shape" => Mode::Shape,
            "type" => Mode::Type,
            "anynode" => Mode::AnyNode,
            "refuse" => Mode::Refuse,
            "expect" => Mode::Expect,
            "scan" => Mode::Scan,
            "pernode" => Mode::PerNode,
            _ => return None,
        })
    }
}

/// One command line of a case, arguments still holding placeholders.
pub type Line = Vec<Vec<u8>>;

/// One sample invocation of a command, with its fixture.
#[derive(Debug, Clone)]
pub struct Case {
    /// Line of `case` in the file, for messages.
    pub line: usize,
    /// The command as `COMMAND LIST` names it (`object|encoding`).
    pub name: String,
    pub mode: Mode,
    /// Runs on new connections (on both sides), dropped afterwards: the case changes connection
    /// state (QUIT, HELLO 3, subscriptions, AUTH failures).
    pub fresh: bool,
    /// Fixture: replies compared by shape, and none may be an error.
    pub setup: Vec<Line>,
    /// The invocations under test.
    pub run: Vec<Line>,
    /// Run after the case on both sides; replies ignored. Keys need none: the walk flushes every
    /// master between sides and cases.
    pub cleanup: Vec<Line>,
    /// `expect` mode: the exact reply to each `run` line.
    pub expect: Vec<Vec<u8>>,
    /// Extra invocations for the `COMMAND GETKEYS` comparison only.
    pub getkeys: Vec<Line>,
    /// Which servers the case is for, by whether their `COMMAND` reports the command.
    pub presence: Presence,
}

/// Options `new` and `absent`: cases for commands some server versions have and others lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Every server.
    Always,
    /// Only where the node reports the command (newer than Redis 7.0: HEXPIRE, CLUSTER MYSHARDID).
    New,
    /// Only where the node does not report it (the proxy's answer for servers without it).
    Absent,
}

impl Case {
    /// Whether the case is for a server whose `COMMAND` reports `reported`.
    pub fn applies(&self, reported: impl Fn(&str) -> bool) -> bool {
        match self.presence {
            Presence::Always => true,
            Presence::New => reported(&self.name),
            Presence::Absent => !reported(&self.name),
        }
    }
}

/// Values of the placeholders for one case.
#[derive(Debug, Clone)]
pub struct Tags {
    /// `{t}`: a hash tag of its own for the case (`{cw12}`).
    pub t: String,
    /// `{u}`: a second hash tag in another slot, for cross-slot requests.
    pub u: String,
    /// `{slot}`: the slot of `{t}`.
    pub slot: u16,
}

impl Tags {
    /// The tags of case number `index`; `slot_of` hashes a key.
    pub fn for_case(index: usize, slot_of: impl Fn(&[u8]) -> u16) -> Tags {
        let t = format!("{{cw{index}}}");
        let slot = slot_of(t.as_bytes());
        // A handful of suffixes always includes one in another slot (1/16384 chance each to collide).
        let u = (0..8)
            .map(|n| format!("{{cw{index}x{n}}}"))
            .find(|u| slot_of(u.as_bytes()) != slot)
            .expect("one of eight tags hashes to another slot");
        Tags { t, u, slot }
    }

    /// `line` with every placeholder replaced.
    pub fn expand(&self, line: &Line) -> Vec<Vec<u8>> {
        let slot = self.slot.to_string();
        let pairs: [(&[u8], &[u8]); 3] =
            [(b"{t}", self.t.as_bytes()), (b"{u}", self.u.as_bytes()), (b"{slot}", slot.as_bytes())];
        line.iter().map(|arg| pairs.iter().fold(arg.clone(), |arg, (from, to)| replace(&arg, from, to))).collect()
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Parses the case file.
///
/// # Panics
/// On any syntax error, naming the line: a broken case file must not silently skip commands.
pub fn parse(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (keyword, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
        let args = split_args(rest).unwrap_or_else(|why| bad_line(number, raw, &why));
        if keyword == "case" {
            let words: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let Some((name, options)) = words.split_first() else {
                bad_line(number, raw, "a case needs a command name")
            };
            let mut case = Case {
                line: number,
                name: name.clone(),
                mode: Mode::Same,
                fresh: false,
                setup: Vec::new(),
                run: Vec::new(),
                cleanup: Vec::new(),
                expect: Vec::new(),
                getkeys: Vec::new(),
                presence: Presence::Always,
            };
            for option in options {
                match (option.as_str(), Mode::from_name(option)) {
                    ("fresh", _) => case.fresh = true,
                    ("new", _) => case.presence = Presence::New,
                    ("absent", _) => case.presence = Presence::Absent,
                    (_, Some(mode)) => case.mode = mode,
                    _ => bad_line(number, raw, &format!("unknown case option {option:?}")),
                }
            }
            cases.push(case);
            continue;
        }
        let Some(case) = cases.last_mut() else { bad_line(number, raw, "a line before the first `case`") };
        if args.is_empty() {
            bad_line(number, raw, "a line without arguments");
        }
        match keyword {
            "setup" => case.setup.push(args),
            "run" => case.run.push(args),
            "cleanup" => case.cleanup.push(args),
            "getkeys" => case.getkeys.push(args),
            "expect" if args.len() == 1 => case.expect.extend(args),
            "expect" => bad_line(number, raw, "`expect` takes one quoted reply"),
            _ => bad_line(number, raw, &format!("unknown keyword {keyword:?}")),
        }
    }
    for case in &cases {
        let fail = |why: &str| bad_line(case.line, &format!("case {}", case.name), why);
        if case.run.is_empty() {
            fail("no `run` line");
        }
        if (case.mode == Mode::Expect) == case.expect.is_empty() {
            fail("`expect` lines belong to, and are needed by, `expect` cases");
        }
        if case.mode == Mode::Expect && case.expect.len() != case.run.len() {
            fail("one `expect` per `run` line");
        }
        if case.mode == Mode::Scan && case.run.len() != 1 {
            fail("a `scan` case has exactly one `run` line (SCAN 0 …)");
        }
    }
    cases
}

fn bad_line(number: usize, line: &str, why: &str) -> ! {
    panic!("cases.txt:{number}: {why}: {line}")
}

/// Splits a line into arguments the way `redis-cli` does: whitespace separates; `"…"` may hold
/// spaces and the escapes `\n \r \t \a \b \\ \" \xHH`; `'…'` is literal except `\'`.
fn split_args(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    // Every turn consumes at least one byte, so the loop ends.
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        match bytes[i] {
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated \"".into()),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let escaped = *bytes.get(i + 1).ok_or("a \\ at the end")?;
                            i += 2;
                            arg.push(match escaped {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'a' => 7,
                                b'b' => 8,
                                b'x' => {
                                    let hex = line.get(i..i + 2).ok_or("\\x needs two hex digits")?;
                                    i += 2;
                                    u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex}"))?
                                }
                                other => other,
                            });
                        }
                        Some(&b) => {
                            arg.push(b);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            b'\'' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated '".into()),
                        Some(b'\'') => break,
                        Some(b'\\') if bytes.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 2;
                        }
                        Some(&b) => {
                            arg.push(b);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            _ => {
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    arg.push(bytes[i]);
                    i += 1;
                }
            }
        }
        if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            return Err("a closing quote must be followed by a space".into());
        }
        args.push(arg);
    }
    Ok(args)
}
