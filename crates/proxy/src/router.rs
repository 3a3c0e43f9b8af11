//! Request → [`Route`]: where a command goes and how its replies come back together.
//!
//! Pure: it reads the command table and hashes keys, but knows nothing of nodes or sockets. Which
//! node owns a slot is looked up when the route is dispatched, so a route survives a topology swap.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::command::{AdminKind, CommandSpec, CommandTable, Handling, LocalKind, Merge, StatefulKind};
use crate::error::{ProxyError, c_str};
use crate::merge::KeyPlace;
use crate::resp::Request;
use crate::resp::reply::put_header;
use crate::slot::{SLOT_COUNT, Slot, key_slot};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To one node: the owner of `slot`, or any master for a keyless command. `write` commands never
    /// go to replicas.
    /// Owns nothing: `Session::carry_out` forgets it rather than drop it (keep it so).
    Single { slot: Option<Slot>, write: bool },
    /// A script or function (`function`: FCALL): like `Single`, but on one of the node's script
    /// lanes, where it may run as long as it likes without holding up other clients' commands.
    Script { slot: Option<Slot>, write: bool, function: bool },
    /// Split into one request per slot, replies merged. Each part is sent to its slot's owner.
    Split { merge: Merge, parts: Vec<Part>, places: Vec<KeyPlace> },
    /// The request as is, to every master, replies merged.
    FanOut { merge: Merge },
    /// The request as is, to the nodes the operator command calls for, replies merged with each
    /// node named (the session resolves the nodes against the current map).
    Admin(AdminKind),
    /// Answered by the proxy itself, by the part of the session the kind names.
    Local(LocalKind),
    /// Needs per-client upstream state.
    Stateful(StatefulKind),
    /// Refused at once with this error (unknown command, arity, cross-slot, unsupported).
    Refuse(ProxyError),
}

/// One per-slot piece of a split request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub slot: Slot,
    pub payload: Bytes,
}

/// Plans a request: looks its command up, checks its arity, and plans it. `keys` is scratch space
/// reused across calls to avoid an allocation each.
pub fn plan(table: &CommandTable, request: &Request, keys: &mut Vec<usize>) -> Route {
    let Some(spec) = table.lookup(request) else {
        return Route::Refuse(unknown_command(table, request));
    };
    match arity_error(spec, request) {
        Some(error) => Route::Refuse(error),
        None => plan_command(spec, request, keys),
    }
}

/// Plans a request whose command the caller already looked up and whose arity it checked (the
/// session checks arity with the rest of Redis' admission checks, in Redis' order).
pub fn plan_command(spec: &CommandSpec, request: &Request, keys: &mut Vec<usize>) -> Route {
    match &spec.handling {
        Handling::Local(kind) => Route::Local(*kind),
        Handling::Refuse(reason) => {
            Route::Refuse(ProxyError::Unsupported { command: String::from_utf8_lossy(request.arg(0)).into(), reason })
        }
        Handling::FanOut(merge) => Route::FanOut { merge: merge.clone() },
        Handling::Admin(kind) => Route::Admin(*kind),
        Handling::Stateful(StatefulKind::Blocking) if is_nonblocking_stream_read(request) => {
            forward(spec, request, keys)
        }
        Handling::Stateful(kind) => Route::Stateful(*kind),
        Handling::Forward => forward(spec, request, keys),
        Handling::Script { function } => match forward(spec, request, keys) {
            Route::Single { slot, write } => Route::Script { slot, write, function: *function },
            other => other,
        },
        Handling::Split { merge, key_step } => split(spec, request, keys, merge, *key_step),
    }
}

/// The slot a command queued inside MULTI ties the transaction to. PUBLISH and PUBSUB's counts
/// tie it to none: sent alone they go to the pub/sub home for its count, but any master publishes
/// to the whole cluster, and a node queues them as keyless. (A numkeys a node cannot read ties it
/// to the keys the node finds instead, as [`slot_of`] finds them: the command is queued, and its
/// own error comes in EXEC's array, as on a node.)
///
/// # Errors
/// As [`slot_of`].
pub fn slot_in_transaction(
    spec: &CommandSpec,
    request: &Request,
    keys: &mut Vec<usize>,
) -> Result<Option<Slot>, ProxyError> {
    match answered_at_pubsub_home(spec) {
        true => Ok(None),
        false => slot_of(spec, request, keys),
    }
}

/// Whether the pub/sub home answers `spec` (PUBLISH and PUBSUB's counts): its subscribers are
/// every RedisForge's classic subscribers.
pub fn answered_at_pubsub_home(spec: &CommandSpec) -> bool {
    AT_PUBSUB_HOME.contains(&spec.name.as_str())
}

/// The one slot all keys of the request hash to (`None`: keyless).
///
/// # Errors
/// The reply to give instead: `-CROSSSLOT`, or a bad key count.
pub fn slot_of(spec: &CommandSpec, request: &Request, keys: &mut Vec<usize>) -> Result<Option<Slot>, ProxyError> {
    match forward(spec, request, keys) {
        Route::Single { slot, .. } => Ok(slot),
        Route::Refuse(error) => Err(error),
        _ => Ok(None),
    }
}

/// Redis' reply to a request with the wrong number of arguments, if it has.
pub fn arity_error(spec: &CommandSpec, request: &Request) -> Option<ProxyError> {
    (!spec.arity_ok(request.argc())).then(|| ProxyError::arity(&spec.name))
}

/// `XREAD`/`XREADGROUP` only block with a `BLOCK` argument; without it they are ordinary reads.
fn is_nonblocking_stream_read(request: &Request) -> bool {
    let name = request.arg(0);
    let is_stream_read = name.eq_ignore_ascii_case(b"xread") || name.eq_ignore_ascii_case(b"xreadgroup");
    is_stream_read
        && !(1..request.argc())
            .map(|i| request.arg(i))
            .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
            .any(|a| a.eq_ignore_ascii_case(b"block"))
}

/// Keyless commands that are about one slot, named by the argument at this index: they go to the
/// slot's owner, since any other master would answer for its own (empty) copy of the slot.
const SLOT_ARGUMENT: &[(&str, usize)] = &[("cluster|countkeysinslot", 2)];

/// The slot whose master is the *pub/sub home*: every classic (non-sharded) subscription made
/// through any RedisForge in front of the cluster lives there, and PUBLISH and PUBSUB
/// CHANNELS/NUMSUB/NUMPAT go there. A node counts only its own subscribers, so this makes PUBLISH
/// answer the number of clients that received the message, as one Redis node does. Slot 0, so
/// that every proxy instance picks the same master without talking to the others.
pub const PUBSUB_HOME_SLOT: Slot = 0;

/// Commands answered by the pub/sub home (see [`PUBSUB_HOME_SLOT`]).
const AT_PUBSUB_HOME: &[&str] = &["publish", "pubsub|channels", "pubsub|numsub", "pubsub|numpat"];

/// The slot a [`SLOT_ARGUMENT`] command names; `None` for other commands and for arguments that
/// are not a slot number (the node answers those with its own error).
fn slot_argument(spec: &CommandSpec, request: &Request) -> Option<Slot> {
    let &(_, index) = SLOT_ARGUMENT.iter().find(|(name, _)| *name == spec.name)?;
    let arg = (index < request.argc()).then(|| request.arg(index))?;
    std::str::from_utf8(arg).ok()?.parse::<Slot>().ok().filter(|&slot| slot < SLOT_COUNT)
}

fn forward(spec: &CommandSpec, request: &Request, keys: &mut Vec<usize>) -> Route {
    if let Some(slot) = slot_argument(spec, request) {
        return Route::Single { slot: Some(slot), write: spec.is_write() };
    }
    if spec.flags.contains(crate::command::CommandFlags::PUBSUB) && AT_PUBSUB_HOME.contains(&spec.name.as_str()) {
        // `write`: never a replica, whose subscribers are not the home's.
        return Route::Single { slot: Some(PUBSUB_HOME_SLOT), write: true };
    }
    // A node that cannot read a request's numkeys finds its keys as the command's getkeys
    // function does (C's `atoi` of the count) and routes by those; the command's own checks then
    // answer — its numkeys error, or before it FCALL's `Function not found`, EVALSHA's
    // `-NOSCRIPT` for a short SHA. So the request goes there too, and the node answers.
    if spec.key_positions(request, keys).is_err() {
        crate::command::fallback_key_positions(spec, request, keys);
    }
    let mut slots = keys.iter().map(|&i| key_slot(request.arg(i)));
    let Some(first) = slots.next() else {
        return Route::Single { slot: None, write: spec.is_write() };
    };
    if slots.any(|s| s != first) {
        return Route::Refuse(ProxyError::CrossSlot);
    }
    Route::Single { slot: Some(first), write: spec.is_write() }
}

/// Splits a multi-key command (keys every `key_step` arguments from argument 1) into one request
/// per slot. A request whose keys share one slot is forwarded whole, as the common case.
fn split(spec: &CommandSpec, request: &Request, keys: &mut Vec<usize>, merge: &Merge, key_step: usize) -> Route {
    // MSET takes key/value pairs: an odd count is an arity error in Redis, not a missing value.
    if !(request.argc() - 1).is_multiple_of(key_step) {
        return Route::Refuse(ProxyError::arity(&spec.name));
    }
    if let Err(error) = spec.key_positions(request, keys) {
        return Route::Refuse(ProxyError::command(format!("ERR {error}")));
    }
    // Each key hashed once; inline for the usual few keys, so the common single-slot request
    // allocates nothing here.
    let slots: SmallVec<[Slot; 16]> = keys.iter().map(|&i| key_slot(request.arg(i))).collect();
    let first = slots.first().copied();
    if slots.iter().all(|&slot| Some(slot) == first) {
        return Route::Single { slot: first, write: spec.is_write() };
    }
    // Group by slot in order of first appearance; remember where each key went for the merge
    // (the part its slot's group became, and its place in that part).
    let mut groups = SlotGroups::default();
    let places: Vec<KeyPlace> = slots.iter().map(|&slot| groups.place(slot)).collect();
    let groups = groups.groups;
    // The keys part after part, each part's in request order: a key goes where its part starts
    // plus its place in the part (one pass over the keys, however many parts).
    let mut starts: SmallVec<[usize; 16]> = SmallVec::with_capacity(groups.len());
    groups.iter().fold(0, |start, &(_, count)| {
        starts.push(start);
        start + count as usize
    });
    let mut by_part: SmallVec<[usize; 16]> = smallvec::smallvec![0; keys.len()];
    for (&key, place) in keys.iter().zip(&places) {
        by_part[starts[place.part as usize] + place.index as usize] = key;
    }
    // Every part's payload in one buffer, each argument copied as the client encoded it.
    let mut out = BytesMut::with_capacity(request.bytes().len() + groups.len() * (16 + request.arg_encoded(0).len()));
    let parts = groups
        .iter()
        .zip(&starts)
        .map(|(&(slot, count), &start)| {
            put_header(&mut out, b'*', 1 + count as usize * key_step);
            out.extend_from_slice(request.arg_encoded(0));
            for &key in &by_part[start..start + count as usize] {
                (key..key + key_step).for_each(|i| out.extend_from_slice(request.arg_encoded(i)));
            }
            Part { slot, payload: out.split().freeze() }
        })
        .collect();
    Route::Split { merge: merge.clone(), parts, places }
}

/// The slots of a split request's keys, in order of first appearance, with how many keys each
/// has so far. A few groups are searched in place; past [`SlotGroups::SEARCHED`] a map finds them,
/// so a request over thousands of slots costs a lookup per key, not a search over every group.
#[derive(Default)]
struct SlotGroups {
    groups: SmallVec<[(Slot, u32); SlotGroups::SEARCHED]>,
    /// Slot → group, filled once the groups outgrow a search.
    index: HashMap<Slot, u32>,
}

impl SlotGroups {
    const SEARCHED: usize = 16;

    /// Where the next key of `slot` goes: its group (created when the slot is new) and its place
    /// there.
    fn place(&mut self, slot: Slot) -> KeyPlace {
        let found = match self.index.is_empty() {
            true => self.groups.iter().position(|(s, _)| *s == slot),
            false => self.index.get(&slot).map(|&part| part as usize),
        };
        let part = found.unwrap_or_else(|| self.add(slot));
        let place = KeyPlace { part: part as u32, index: self.groups[part].1 };
        self.groups[part].1 += 1;
        place
    }

    fn add(&mut self, slot: Slot) -> usize {
        self.groups.push((slot, 0));
        let part = self.groups.len() - 1;
        if self.groups.len() > Self::SEARCHED {
            if self.index.is_empty() {
                self.index.extend(self.groups.iter().enumerate().map(|(part, &(slot, _))| (slot, part as u32)));
            }
            self.index.insert(slot, part as u32);
        }
        part
    }
}

/// Redis' reply to a command it does not know, arguments quoted as Redis' `commandCheckExistence`
/// quotes them: raw bytes up to a NUL ([`c_str`]), the command's 128 at most, the arguments'
/// together about 128 (each gets what the ones before it left).
pub fn unknown_command(table: &CommandTable, request: &Request) -> ProxyError {
    let name = c_str(request.arg(0), usize::MAX);
    if request.argc() > 1 && table.is_container(request.arg(0)) {
        let sub = c_str(request.arg(1), 128);
        let text = [&b"ERR unknown subcommand '"[..], sub, b"'. Try ", &name.to_ascii_uppercase(), b" HELP."];
        return ProxyError::UnknownCommand(Bytes::from(text.concat()));
    }
    let mut args = Vec::new();
    for i in 1..request.argc() {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        args.push(b'\'');
        args.extend_from_slice(c_str(request.arg(i), room));
        args.extend_from_slice(b"' ");
    }
    let text = [&b"ERR unknown command '"[..], c_str(name, 128), b"', with args beginning with: ", &args];
    ProxyError::UnknownCommand(Bytes::from(text.concat()))
}

#[cfg(test)]
mod tests;
