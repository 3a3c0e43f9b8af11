//! The whole command table walked against a real cluster (issue #10).
//!
//! Every command and subcommand a node's `COMMAND` reports has at least one sample invocation in
//! `tests/command_walk/cases.txt` (its header documents the format), or a reason in [`UNWALKED`].
//! Each case runs through the proxy and then directly on the master owning the case's hash tag,
//! each time on a freshly flushed cluster with the same fixture, and every reply must be the same
//! bytes, or the same shape for the non-deterministic commands the file marks so. Commands the
//! proxy refuses or answers differently on purpose are checked for that documented answer instead;
//! operator diagnostics answered per master (LATENCY, MEMORY STATS) must name every master, each
//! with a reply of the type that master gives.
//! A case the proxy sent to a node that does not own its slot (a `MOVED` it followed) fails too, so
//! routing mistakes cannot hide behind redirections.
//!
//! The walk runs twice, with RESP2 and with RESP3 connections. Two sweeps need no fixtures:
//! `COMMAND GETKEYS` through the proxy (answered from its own table) against a node's, for every
//! invocation in the file; and the wrong-arity error of every command against Redis' own.
//!
//! Known proxy bugs outside the router keep some cases failing on purpose; `cases.txt` marks each
//! with `PROXY BUG`. The GETKEYS sweep passes once `session/local.rs` answers with
//! `CommandTable::command_getkeys` (Redis' own rules) instead of the routing key finder.
//!
//! Under nextest every test has its own cluster; the walk is sequential and owns that cluster's
//! keyspace, which it flushes between sides and cases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redisforge_proxy::command::{CommandTable, Handling};
use redisforge_proxy::slot::key_slot;
use redisforge_tests::{Cluster, Proxy, ProxyOptions, SlotRange, http_get};

use redisforge_tests::command_cases::{self as cases, CASES, Case, Line, Mode, Presence, Tags};
use redisforge_tests::resp::{Conn, Frame, show};

/// Commands `COMMAND` reports that have no case, with the reason. Keep it short: a command here
/// is not checked at all.
const UNWALKED: &[(&str, &str)] = &[];

/// Longest reply shown in a failure message, in characters.
const SHOW: usize = 400;

/// One reply: its exact bytes and the parsed frame, or why there is none.
type Reply = Result<(Vec<u8>, Frame), String>;

/// What one side (through the proxy, or on a node) answered to a case.
#[derive(Default)]
struct Side {
    setup: Vec<Reply>,
    run: Vec<Reply>,
    /// `scan` cases: every key a full iteration returned.
    scanned: Option<Result<BTreeSet<Vec<u8>>, String>>,
}

/// A cluster, a proxy in front of it, and connections to both.
struct Walk {
    /// The protocol of every case connection: RESP2, or RESP3 after `HELLO 3`.
    resp3: bool,
    proxy: Proxy,
    ranges: Vec<SlotRange>,
    masters: Vec<String>,
    via_proxy: Conn,
    /// Per master: a connection for the cases, and one for flushing between them.
    nodes: BTreeMap<String, Conn>,
    admin: BTreeMap<String, Conn>,
    failures: Vec<String>,
}

impl Walk {
    fn start(resp3: bool) -> Walk {
        let cluster = Cluster::shared();
        // The walk compares replies, not speed: PFSELFTEST can take longer than the default 2 s
        // on a loaded machine (a CI run got `upstream timeout` for it).
        let upstream = "[upstream]\nseeds = @SEEDS@\n@UPSTREAM_AUTH@\ncommand_timeout = \"20s\"\n";
        let proxy = Proxy::start(cluster, ProxyOptions { extra_toml: upstream.into(), ..ProxyOptions::default() });
        let ranges = cluster.slot_ranges();
        let masters: Vec<String> =
            ranges.iter().map(|r| r.master.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        assert_eq!(masters.len(), 3, "the walk expects the shared 3-master cluster: {ranges:?}");
        let open_all =
            |resp3| masters.iter().map(|m| (m.clone(), Conn::open_with(m, resp3))).collect::<BTreeMap<_, _>>();
        Walk {
            resp3,
            via_proxy: Conn::open_with(&proxy.addr(), resp3),
            nodes: open_all(resp3),
            admin: open_all(false),
            proxy,
            ranges,
            masters,
            failures: Vec::new(),
        }
    }

    fn owner(&self, slot: u16) -> String {
        let range = self.ranges.iter().find(|r| (r.start..=r.end).contains(&slot));
        range.map(|r| r.master.clone()).unwrap_or_else(|| panic!("slot {slot} is not covered: {:?}", self.ranges))
    }

    /// Empties every master (the replicas follow), so each side of a case starts from nothing.
    fn flush(&mut self) {
        for (addr, conn) in &mut self.admin {
            match conn.call(&[b"FLUSHALL".to_vec()]) {
                Ok((bytes, _)) if bytes == b"+OK\r\n" => {}
                other => panic!("FLUSHALL on {addr}: {other:?}"),
            }
        }
    }

    /// `MOVED` and `ASK` redirections the proxy has followed so far.
    fn redirections(&self) -> u64 {
        let (status, body) = http_get(&self.proxy.metrics_addr(), "/metrics", Duration::from_secs(5));
        assert_eq!(status, 200, "GET /metrics: {body}");
        let samples: Vec<f64> = body
            .lines()
            .filter(|l| l.starts_with("redisforge_redirections_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        // Without the samples the routing check would pass vacuously.
        assert_eq!(samples.len(), 2, "redirections_total{{kind=moved|ask}} in /metrics:\n{body}");
        samples.iter().sum::<f64>() as u64
    }

    fn fail(&mut self, case: &Case, why: String) {
        self.failures.push(format!("{} (cases.txt:{}): {why}", case.name, case.line));
    }

    /// Runs one case through the proxy and, unless its mode says otherwise, on the owning node.
    fn case(&mut self, index: usize, case: &Case) {
        let tags = Tags::for_case(index, key_slot);
        self.flush();
        let redirections = self.redirections();
        let mut fresh = case.fresh.then(|| Conn::open_with(&self.proxy.addr(), self.resp3));
        let through = run_side(fresh.as_mut().unwrap_or(&mut self.via_proxy), case, &tags, case.mode == Mode::Scan);
        drop(fresh);
        if !case.fresh && !answers_ping(&mut self.via_proxy) {
            self.fail(case, "left the proxy connection unusable (PING did not answer +PONG)".into());
            self.via_proxy = Conn::open_with(&self.proxy.addr(), self.resp3);
        }
        let followed = self.redirections().saturating_sub(redirections);
        if followed > 0 {
            self.fail(
                case,
                format!("the proxy sent it to a node that does not own its slot ({followed} MOVED/ASK followed)"),
            );
        }
        for (i, reply) in through.setup.iter().enumerate() {
            match reply {
                Err(e) => self.fail(case, format!("setup #{} through the proxy: {e}", i + 1)),
                Ok((bytes, frame)) if frame.is_error() => {
                    self.fail(case, format!("setup #{} through the proxy failed: {}", i + 1, show(bytes, SHOW)));
                }
                Ok(_) => {}
            }
        }
        match case.mode {
            Mode::Refuse => self.check_refused(case, &through),
            Mode::Expect => self.check_expected(case, &through),
            Mode::AnyNode => self.check_any_node(case, &tags, &through),
            Mode::PerNode => self.check_per_node(case, &tags, &through),
            Mode::Same | Mode::Shape | Mode::Type | Mode::Scan => {
                self.flush();
                let owner = self.owner(tags.slot);
                let direct = self.on_node(&owner, case, &tags);
                if let Some(why) = differences(case, &through, &direct) {
                    self.fail(case, format!("through the proxy vs. on {owner}:\n{why}"));
                }
            }
        }
        self.flush();
    }

    /// Runs the case directly on `addr`; `scan` cases iterate every master.
    fn on_node(&mut self, addr: &str, case: &Case, tags: &Tags) -> Side {
        let mut fresh = case.fresh.then(|| Conn::open_with(addr, self.resp3));
        let conn = match fresh.as_mut() {
            Some(conn) => conn,
            None => self.nodes.get_mut(addr).expect("a connection per master"),
        };
        let mut side = run_side(conn, case, tags, case.mode == Mode::Scan);
        if case.mode == Mode::Scan {
            // The fixture lives on the owner, the iteration covers the whole cluster.
            let mut keys = BTreeSet::new();
            let first = tags.expand(&case.run[0]);
            for master in &self.masters {
                match scan_all(self.nodes.get_mut(master).expect("a connection per master"), &first) {
                    Ok(found) => keys.extend(found),
                    Err(e) => side.scanned = Some(Err(format!("on {master}: {e}"))),
                }
            }
            if side.scanned.is_none() {
                side.scanned = Some(Ok(keys));
            }
        }
        drop(fresh);
        if !case.fresh && !answers_ping(self.nodes.get_mut(addr).expect("a connection per master")) {
            self.fail(case, format!("left the connection to {addr} unusable"));
            self.nodes.insert(addr.to_owned(), Conn::open_with(addr, self.resp3));
        }
        side
    }

    fn check_refused(&mut self, case: &Case, through: &Side) {
        for (i, reply) in through.run.iter().enumerate() {
            let refused = match reply {
                Ok((bytes, _)) => {
                    let text = String::from_utf8_lossy(bytes);
                    (text.starts_with("-ERR unsupported command '") && text.contains("' in proxy: ")).then_some(())
                }
                Err(_) => None,
            };
            if refused.is_none() {
                self.fail(case, format!("run #{} is not refused by the proxy: {}", i + 1, describe(reply)));
            }
        }
    }

    fn check_expected(&mut self, case: &Case, through: &Side) {
        for (i, (reply, expected)) in through.run.iter().zip(&case.expect).enumerate() {
            if !matches!(reply, Ok((bytes, _)) if bytes == expected) {
                let got = describe(reply);
                self.fail(case, format!("run #{}: expected {}, got {got}", i + 1, show(expected, SHOW)));
            }
        }
        if through.run.len() != case.expect.len() {
            self.fail(case, format!("{} replies for {} expected", through.run.len(), case.expect.len()));
        }
    }

    fn check_any_node(&mut self, case: &Case, tags: &Tags, through: &Side) {
        let mut seen = Vec::new();
        for master in self.masters.clone() {
            self.flush();
            let direct = self.on_node(&master, case, tags);
            match differences(case, through, &direct) {
                None => return,
                Some(why) => seen.push(format!("{master}: {why}")),
            }
        }
        self.fail(case, format!("no master answers as the proxy does:\n{}", seen.join("\n")));
    }

    /// Each `run` reply is keyed by every master's address, each value of the type that master
    /// gives directly.
    fn check_per_node(&mut self, case: &Case, tags: &Tags, through: &Side) {
        let mut direct = BTreeMap::new();
        for master in self.masters.clone() {
            self.flush();
            direct.insert(master.clone(), self.on_node(&master, case, tags));
        }
        let masters: BTreeSet<String> = self.masters.iter().cloned().collect();
        for (i, reply) in through.run.iter().enumerate() {
            let pairs: Vec<(String, &Frame)> = match reply {
                Ok((_, Frame::Aggregate(b'%' | b'*', Some(items)))) if items.len().is_multiple_of(2) => items
                    .chunks(2)
                    .map(|pair| {
                        (pair[0].text().map(|t| String::from_utf8_lossy(t).into_owned()).unwrap_or_default(), &pair[1])
                    })
                    .collect(),
                _ => {
                    self.fail(case, format!("run #{}: not keyed by node: {}", i + 1, describe(reply)));
                    continue;
                }
            };
            let named: BTreeSet<String> = pairs.iter().map(|(node, _)| node.clone()).collect();
            if named != masters || pairs.len() != masters.len() {
                self.fail(case, format!("run #{}: keyed by {named:?}, not by every master {masters:?}", i + 1));
                continue;
            }
            for (node, value) in pairs {
                let theirs = direct.get(&node).and_then(|side: &Side| side.run.get(i));
                if !matches!(theirs, Some(Ok((bytes, _))) if bytes.first() == Some(&kind(value))) {
                    let theirs = theirs.map_or_else(|| "<none>".to_owned(), describe);
                    self.fail(case, format!("run #{}: {node}'s value {value:?} is not of the type of {theirs}", i + 1));
                }
            }
        }
    }
}

/// Runs a case's setup, run and cleanup lines on `conn`; stops at the first broken connection.
/// `scan` cases iterate their SCAN to the end instead of running it once.
fn run_side(conn: &mut Conn, case: &Case, tags: &Tags, scan: bool) -> Side {
    let mut side = Side::default();
    for line in &case.setup {
        let reply = conn.call(&tags.expand(line));
        let broken = reply.is_err();
        side.setup.push(reply);
        if broken {
            return side;
        }
    }
    if scan {
        side.scanned = Some(scan_all(conn, &tags.expand(&case.run[0])));
    } else {
        for line in &case.run {
            let reply = conn.call(&tags.expand(line));
            let broken = reply.is_err();
            side.run.push(reply);
            if broken {
                return side;
            }
        }
    }
    for line in &case.cleanup {
        if conn.call(&tags.expand(line)).is_err() {
            break;
        }
    }
    side
}

/// Iterates `SCAN <cursor> <options…>` (`first` is the `SCAN 0 …` line) until the cursor is 0 again.
fn scan_all(conn: &mut Conn, first: &[Vec<u8>]) -> Result<BTreeSet<Vec<u8>>, String> {
    let mut keys = BTreeSet::new();
    let mut args = first.to_vec();
    for _ in 0..10_000 {
        let (bytes, frame) = conn.call(&args)?;
        let (cursor, found) = match frame.items() {
            Some([cursor, found]) => (cursor.text(), found.items()),
            _ => (None, None),
        };
        let (Some(cursor), Some(found)) = (cursor, found) else {
            return Err(format!("not a SCAN reply: {}", show(&bytes, SHOW)));
        };
        keys.extend(found.iter().filter_map(|k| k.text().map(<[u8]>::to_vec)));
        if cursor == b"0" {
            return Ok(keys);
        }
        args[1] = cursor.to_vec();
    }
    Err("SCAN did not come back to cursor 0 within 10,000 calls".into())
}

/// How two sides' replies differ under the case's mode; `None` when they agree.
fn differences(case: &Case, through: &Side, direct: &Side) -> Option<String> {
    let mut out = Vec::new();
    let pairs = |a: &[Reply], b: &[Reply], what: &str, mode: Mode, out: &mut Vec<String>| {
        if a.len() != b.len() {
            out.push(format!("{} {what} replies through the proxy, {} on the node", a.len(), b.len()));
        }
        for (i, (p, n)) in a.iter().zip(b).enumerate() {
            let agree = match (p, n) {
                (Ok((pb, pf)), Ok((nb, nf))) => match mode {
                    Mode::Shape | Mode::Scan => pf.shape() == nf.shape(),
                    Mode::Type => pb.first() == nb.first(),
                    _ => without_estimates(pb) == without_estimates(nb),
                },
                _ => false,
            };
            if !agree {
                out.push(format!("{what} #{}:\n    proxy: {}\n    node:  {}", i + 1, describe(p), describe(n)));
            }
        }
    };
    // Fixture replies only need the same shape: they are checked for errors separately.
    pairs(&through.setup, &direct.setup, "setup", Mode::Shape, &mut out);
    pairs(&through.run, &direct.run, "run", case.mode, &mut out);
    if case.mode == Mode::Scan {
        match (&through.scanned, &direct.scanned) {
            (Some(Ok(p)), Some(Ok(n))) if p == n && !n.is_empty() => {}
            (p, n) => out.push(format!("SCAN iterated to the end:\n    proxy: {p:?}\n    nodes: {n:?}")),
        }
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

/// `reply` without what a server only estimates, at its own pace: INFO keyspace's `avg_ttl`, which
/// its expire cycle updates every 100 ms or so (a reply taken right after a `SET … EX` shows 0 or
/// the estimate, depending on whether a cycle has sampled the key yet; seen on Valkey 8). The
/// digits are dropped, and the bulk length that counts them. Other replies are compared whole.
fn without_estimates(reply: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const FIELD: &[u8] = b"avg_ttl=";
    if !reply.windows(FIELD.len()).any(|w| w == FIELD) {
        return std::borrow::Cow::Borrowed(reply);
    }
    let body_start = reply.windows(2).position(|w| w == b"\r\n").map_or(0, |at| at + 2);
    let mut out = Vec::with_capacity(reply.len());
    let mut rest = &reply[body_start..];
    while let Some(at) = rest.windows(FIELD.len()).position(|w| w == FIELD) {
        out.extend_from_slice(&rest[..at + FIELD.len()]);
        rest = &rest[at + FIELD.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        rest = &rest[digits..];
    }
    out.extend_from_slice(rest);
    std::borrow::Cow::Owned(out)
}

/// A frame's type byte.
fn kind(frame: &Frame) -> u8 {
    match frame {
        Frame::Line(kind, _) | Frame::Blob(kind, _) | Frame::Aggregate(kind, _) => *kind,
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Ok((bytes, _)) => show(bytes, SHOW),
        Err(e) => format!("<{e}>"),
    }
}

fn answers_ping(conn: &mut Conn) -> bool {
    matches!(conn.call(&[b"PING".to_vec()]), Ok((bytes, _)) if bytes == b"+PONG\r\n")
}

/// Every command and subcommand `COMMAND` reports on `conn`'s node, with its arity.
fn node_commands(conn: &mut Conn) -> BTreeMap<String, i64> {
    let (bytes, frame) = conn.call(&[b"COMMAND".to_vec()]).expect("COMMAND on a node");
    let entries = frame.items().unwrap_or_else(|| panic!("COMMAND is not an array: {}", show(&bytes, SHOW)));
    let mut out = BTreeMap::new();
    let mut add = |entry: &Frame| -> Option<Vec<Frame>> {
        let fields = entry.items()?;
        let name = String::from_utf8_lossy(fields.first()?.text()?).to_ascii_lowercase();
        out.insert(name, fields.get(1)?.integer()?);
        Some(fields.get(9).and_then(Frame::items).map(<[Frame]>::to_vec).unwrap_or_default())
    };
    for entry in entries {
        let subcommands = add(entry).unwrap_or_else(|| panic!("malformed COMMAND entry {entry:?}"));
        for sub in &subcommands {
            add(sub).unwrap_or_else(|| panic!("malformed COMMAND subcommand entry {sub:?}"));
        }
    }
    out
}

/// Checks that the file covers `commands`, names only commands the proxy knows, and agrees with
/// the proxy's table on which commands are refused.
fn coverage(cases: &[Case], commands: &BTreeMap<String, i64>, table: &CommandTable) -> Vec<String> {
    let mut problems = Vec::new();
    let named: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for name in commands.keys() {
        let unwalked = UNWALKED.iter().any(|(n, _)| n == name);
        if !named.contains(name.as_str()) && !unwalked {
            problems.push(format!("{name}: reported by COMMAND but has no case in cases.txt"));
        }
        if named.contains(name.as_str()) && unwalked {
            problems.push(format!("{name}: has a case and is in UNWALKED"));
        }
    }
    for (name, _) in UNWALKED {
        if !commands.contains_key(*name) {
            problems.push(format!("{name}: in UNWALKED but not reported by COMMAND"));
        }
    }
    for (index, case) in cases.iter().enumerate() {
        let at = format!("{} (cases.txt:{})", case.name, case.line);
        let name_args: Vec<&[u8]> = case.name.split('|').map(str::as_bytes).collect();
        let Some(spec) = table.lookup(name_args.as_slice()).filter(|s| s.name == case.name) else {
            // Newer than the built-in table (Redis 7.4's HEXPIRE …): the proxy learns it from the
            // node's COMMAND at start-up; the walk compares its replies all the same.
            if case.presence != Presence::New {
                problems.push(format!("{at}: not a command the proxy's table knows"));
            }
            continue;
        };
        if !commands.contains_key(&case.name) && !matches!(case.mode, Mode::Expect | Mode::Refuse) {
            problems.push(format!("{at}: the node does not know it, so only `expect` or `refuse` can check it"));
        }
        // A bare container refused by the proxy (ACL, MODULE, CLUSTER) is never refused as such:
        // with an unknown subcommand it gets Redis' own `unknown subcommand` error, like a node.
        let bare_container = !case.name.contains('|') && table.is_container(case.name.as_bytes());
        let refused = matches!(spec.handling, Handling::Refuse(_));
        if !bare_container && refused != (case.mode == Mode::Refuse) {
            problems.push(format!(
                "{at}: the proxy's handling is {:?} but the case's mode is {:?}",
                spec.handling, case.mode
            ));
        }
        let tags = Tags::for_case(index, key_slot);
        // A container's case may invoke it with an unknown subcommand, which the table (like
        // Redis' lookupCommand) does not resolve to the container.
        let invokes = |line: &Vec<Vec<u8>>| {
            let args = tags.expand(line);
            match table.lookup(&args) {
                Some(spec) => spec.name == case.name,
                None => table.is_container(&args[0]) && args[0].eq_ignore_ascii_case(case.name.as_bytes()),
            }
        };
        let invoked = case.run.iter().any(invokes);
        if !invoked {
            problems.push(format!("{at}: no `run` line invokes {}", case.name));
        }
    }
    problems
}

fn finish(what: &str, checked: usize, failures: &[String]) {
    eprintln!("command_walk: {what}: {checked} checked, {} failed", failures.len());
    assert!(failures.is_empty(), "{what}: {} of {checked} failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn every_command_answers_through_the_proxy_as_on_its_node() {
    let mut walk = Walk::start(false);
    let first = walk.masters[0].clone();
    let commands = node_commands(walk.nodes.get_mut(&first).expect("a connection per master"));
    let cases: Vec<Case> =
        cases::parse(CASES).into_iter().filter(|c| c.applies(|n| commands.contains_key(n))).collect();
    assert!(commands.len() > 300, "COMMAND reported only {} commands", commands.len());
    walk.failures = coverage(&cases, &commands, &CommandTable::builtin());
    for (index, case) in cases.iter().enumerate() {
        walk.case(index, case);
    }
    let walked = cases.iter().map(|c| c.name.as_str()).filter(|n| commands.contains_key(*n)).collect::<BTreeSet<_>>();
    eprintln!(
        "command_walk: {} of {} commands and subcommands from COMMAND walked, in {} cases",
        walked.len(),
        commands.len(),
        cases.len()
    );
    finish("walk", cases.len(), &walk.failures);
}

/// The same cases with every connection in RESP3 (maps, sets, doubles, pushes), except the
/// `expect` ones, whose replies are written in RESP2.
#[test]
fn every_command_answers_through_the_proxy_as_on_its_node_in_resp3() {
    let mut walk = Walk::start(true);
    let first = walk.masters[0].clone();
    let commands = node_commands(walk.nodes.get_mut(&first).expect("a connection per master"));
    let cases: Vec<Case> =
        cases::parse(CASES).into_iter().filter(|c| c.applies(|n| commands.contains_key(n))).collect();
    let mut walked = 0;
    for (index, case) in cases.iter().enumerate().filter(|(_, c)| c.mode != Mode::Expect) {
        walk.case(index, case);
        walked += 1;
    }
    finish("walk in RESP3", walked, &walk.failures);
}

/// `COMMAND GETKEYS` through the proxy (answered from its table) against a node's, for every `run`
/// and `getkeys` line of the case file.
#[test]
fn command_getkeys_through_the_proxy_matches_the_node() {
    let cases = cases::parse(CASES);
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let node = cluster.masters().into_iter().next().expect("a master");
    let (mut via_proxy, mut direct) = (Conn::open(&proxy.addr()), Conn::open(&node));
    // Commands newer than the node (the proxy's supplement) have nothing to compare with.
    let commands = node_commands(&mut direct);
    let cases: Vec<Case> = cases.into_iter().filter(|c| c.applies(|n| commands.contains_key(n))).collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (index, case) in cases.iter().enumerate().filter(|(_, c)| commands.contains_key(&c.name)) {
        let tags = Tags::for_case(index, key_slot);
        for line in case.run.iter().chain(&case.getkeys) {
            let mut args: Line = vec![b"COMMAND".to_vec(), b"GETKEYS".to_vec()];
            args.extend(tags.expand(line));
            checked += 1;
            let (p, n) = (via_proxy.call(&args), direct.call(&args));
            if !matches!((&p, &n), (Ok((pb, _)), Ok((nb, _))) if pb == nb) {
                let request: Vec<String> = args.iter().map(|a| show(a, 60)).collect();
                failures.push(format!(
                    "{} (cases.txt:{}): {}\n    proxy: {}\n    node:  {}",
                    case.name,
                    case.line,
                    request.join(" "),
                    describe(&p),
                    describe(&n)
                ));
                if p.is_err() {
                    via_proxy = Conn::open(&proxy.addr());
                }
                if n.is_err() {
                    direct = Conn::open(&node);
                }
            }
        }
    }
    assert!(checked > 400, "only {checked} invocations in the case file");
    finish("COMMAND GETKEYS", checked, &failures);
}

/// Argument lists with one argument too few or too many for `name` (`container|sub` for
/// subcommands), where such a request still names that command.
fn wrong_arities(name: &str, arity: i64) -> Vec<Line> {
    let base: Line = name.split('|').map(|part| part.to_ascii_uppercase().into_bytes()).collect();
    let counts = match arity {
        a if a > 0 => vec![a - 1, a + 1],
        a => vec![-a - 1],
    };
    counts
        .into_iter()
        .filter(|&argc| argc >= base.len() as i64)
        .map(|argc| {
            let mut args = base.clone();
            args.resize(argc as usize, b"x".to_vec());
            args
        })
        .collect()
}

#[test]
fn arity_and_unknown_command_errors_use_redis_wording() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let node = cluster.masters().into_iter().next().expect("a master");
    let (mut via_proxy, mut direct) = (Conn::open(&proxy.addr()), Conn::open(&node));
    let commands = node_commands(&mut direct);
    let unknown: [&[&str]; 4] =
        [&["NOSUCHCOMMAND"], &["NOSUCHCOMMAND", "a", "b c"], &["nosuch|command", "x"], &["OBJECT|ENCODING", "x"]];
    let requests: Vec<Line> = commands
        .iter()
        .flat_map(|(name, arity)| wrong_arities(name, *arity))
        .chain(unknown.iter().map(|args| args.iter().map(|a| a.as_bytes().to_vec()).collect()))
        .collect();
    let mut failures = Vec::new();
    for args in &requests {
        let (p, n) = (via_proxy.call(args), direct.call(args));
        let error = matches!(&n, Ok((_, frame)) if frame.is_error());
        if !error || !matches!((&p, &n), (Ok((pb, _)), Ok((nb, _))) if pb == nb) {
            let request: Vec<String> = args.iter().map(|a| show(a, 60)).collect();
            failures.push(format!("{}\n    proxy: {}\n    node:  {}", request.join(" "), describe(&p), describe(&n)));
            if p.is_err() {
                via_proxy = Conn::open(&proxy.addr());
            }
            if n.is_err() {
                direct = Conn::open(&node);
            }
        }
    }
    assert!(requests.len() > 300, "only {} wrong-arity requests", requests.len());
    finish("arity errors", requests.len(), &failures);
}
