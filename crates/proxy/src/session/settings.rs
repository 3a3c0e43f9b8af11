//! The settings a `CONFIG SET` changes in the proxy: which it keeps, how it takes their values,
//! what CONFIG GET shows of them, and which part of such a CONFIG SET still goes to the nodes.
//!
//! Settings about the proxy's own clients (`maxclients`, `timeout`, the `normal` and `pubsub`
//! classes of `client-output-buffer-limit`) are the proxy's alone: the client that set them speaks
//! to the proxy as to one node, and on the nodes they would bound the proxy's own connections (a
//! small `maxclients` refusing them, a `timeout` closing idle ones). The others the proxy keeps
//! (`tracking-table-max-keys`, Valkey's `extended-redis-compatibility`) are the nodes' too, and
//! the proxy takes them once the nodes did.
//!
//! A value the proxy keeps alone is checked as Redis checks it; one Redis refuses sends the whole
//! CONFIG SET to the nodes as it came, so the client gets the node's own refusal and nothing
//! changes anywhere (a node changes all the parameters of one CONFIG SET or none). A CONFIG SET of
//! valid values loses its proxy-only parameters on the way: what is left goes to the nodes, and
//! the proxy takes its part once they answered `+OK`; with nothing left, the proxy answers `+OK`
//! itself. Dropping a valid parameter changes no node's answer, as Redis refuses a CONFIG SET for
//! an unknown name, a duplicate, a value, or one it cannot apply, and a valid proxy-only one is
//! none of these: a `maxclients` the open-file limit cannot serve (`crate::fd_limit`) has the
//! proxy refuse the whole CONFIG SET itself, as a node refuses it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::pipeline::OnMerged;
use crate::command::{OwnConfig, OwnValue, parse_integer};
use crate::error::ProxyError;
use crate::output_classes;
use crate::resp::Request;
use crate::shared::Shared;

/// A setting a `CONFIG SET` changes in the proxy, how the proxy takes a value (`keep`, once the
/// CONFIG SET is known to have been taken), what CONFIG GET shows of it (`shown`; none for
/// Valkey's `extended-redis-compatibility`, which the nodes' is), and what of a value the nodes
/// are sent (`for_nodes`). `tracking-table-max-keys` bounds the proxy's tracking table
/// (client-side caching is the proxy's, `crate::tracking`), `client-output-buffer-limit` the
/// output of the proxy's own clients (`crate::output_classes`), `maxclients` how many clients
/// its listeners accept, `timeout` when an idle one is closed, and `extended-redis-compatibility`
/// how the proxy names the nodes' server (HELLO, INFO) at once, not at its next health poll.
struct Kept {
    name: &'static [u8],
    keep: fn(&Shared, &[u8]),
    shown: fn(&Shared) -> Option<OwnValue>,
    for_nodes: fn(&[u8]) -> ForNodes,
}

/// What of a value of a setting the proxy keeps goes to the nodes.
enum ForNodes {
    /// The whole value: the setting is the nodes' too.
    All,
    /// Nothing: the setting is the proxy's alone.
    Nothing,
    /// This part (the `replica` groups of `client-output-buffer-limit`).
    Part(Vec<u8>),
    /// A value Redis refuses: the nodes refuse it for the client.
    Refused,
    /// A value Redis takes but cannot apply (a `maxclients` the open-file limit cannot serve):
    /// the proxy's refusal, in Redis' words.
    Unapplied(String),
}

const KEPT: [Kept; 5] = [
    Kept {
        name: b"extended-redis-compatibility",
        keep: |shared, value| match value.to_ascii_lowercase().as_slice() {
            b"yes" => shared.topology.set_valkey_redis_compat(true),
            b"no" => shared.topology.set_valkey_redis_compat(false),
            _ => {}
        },
        shown: |_| None,
        for_nodes: |_| ForNodes::All,
    },
    Kept {
        name: b"client-output-buffer-limit",
        keep: |shared, value| {
            shared.output_classes.set_from_config(value);
        },
        shown: |shared| Some(OwnValue::Classes(shared.output_classes.both())),
        for_nodes: |value| match output_classes::replica_groups(value) {
            None => ForNodes::Refused,
            Some(replica) if replica.is_empty() => ForNodes::Nothing,
            Some(replica) if replica.len() == value.len() => ForNodes::All,
            Some(replica) => ForNodes::Part(replica),
        },
    },
    Kept {
        name: b"tracking-table-max-keys",
        keep: |shared, value| {
            if let Some(max) = number(value) {
                shared.tracking.set_max_keys(max);
            }
        },
        shown: |shared| Some(OwnValue::Whole(shared.tracking.max_keys().to_string())),
        for_nodes: |_| ForNodes::All,
    },
    Kept {
        // At least 1, as Redis' bounds say.
        name: b"maxclients",
        keep: |shared, value| {
            if let Some(max) = number::<usize>(value) {
                shared.max_clients.store(max.max(1), Ordering::Relaxed);
            }
        },
        shown: |shared| Some(OwnValue::Whole(shared.max_clients.load(Ordering::Relaxed).to_string())),
        // Redis' `createUIntConfig("maxclients", …, 1, UINT_MAX, …)`: `string2ll`, then compared
        // as unsigned (a negative number is out of range); then its `updateMaxclients`.
        for_nodes: |value| match parse_integer(value).filter(|n| (1..=i64::from(u32::MAX)).contains(n)) {
            None => ForNodes::Refused,
            Some(clients) => match crate::fd_limit::make_room_for(u32::try_from(clients).unwrap_or(u32::MAX)) {
                Ok(()) => ForNodes::Nothing,
                Err(served) => ForNodes::Unapplied(format!(
                    "The operating system is not able to handle the specified number of clients, try with {served}"
                )),
            },
        },
    },
    Kept {
        // Every session follows it at once, as Redis' cron looks at every client with the
        // current value.
        name: b"timeout",
        keep: |shared, value| {
            if let Some(seconds) = number(value) {
                shared.idle_timeout.set(Some(Duration::from_secs(seconds)).filter(|t| !t.is_zero()));
                shared.clients.signal_all();
            }
        },
        shown: |shared| {
            let seconds = shared.idle_timeout.get().map_or(0, crate::clock::whole_seconds);
            Some(OwnValue::Whole(seconds.to_string()))
        },
        // Redis' `createIntConfig("timeout", …, 0, INT_MAX, …)`.
        for_nodes: |value| proxy_alone(parse_integer(value).is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n))),
    },
];

/// A setting of the proxy alone, whose value Redis takes (`valid`) or refuses.
fn proxy_alone(valid: bool) -> ForNodes {
    if valid { ForNodes::Nothing } else { ForNodes::Refused }
}

/// The proxy's values of the settings it keeps, for a CONFIG GET ([`Kept::shown`]).
pub(super) fn own_config(shared: &Shared) -> OwnConfig {
    KEPT.iter().filter_map(|kept| Some((kept.name, (kept.shown)(shared)?))).collect()
}

/// A value taken, as a number.
fn number<T: std::str::FromStr>(value: &[u8]) -> Option<T> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The setting named `name`, if the proxy keeps it (names compare without case, as Redis'
/// config dictionary does).
fn kept(name: &[u8]) -> Option<&'static Kept> {
    KEPT.iter().find(|kept| kept.name.eq_ignore_ascii_case(name))
}

/// Whether `request` is a `CONFIG SET` (with at least one parameter).
fn is_config_set(request: &Request) -> bool {
    request.argc() >= 4 && request.arg(0).eq_ignore_ascii_case(b"config") && request.arg(1).eq_ignore_ascii_case(b"set")
}

/// Whether `request` is a `CONFIG SET` of a setting the proxy keeps.
fn sets_own_settings(request: &Request) -> bool {
    is_config_set(request) && (2..request.argc()).step_by(2).any(|i| kept(request.arg(i)).is_some())
}

/// How a `CONFIG SET` is carried out.
#[derive(Debug)]
pub(super) enum Plan {
    /// Sent to the nodes as it came: it names no setting of the proxy alone, or names one with a
    /// value Redis refuses (or twice), whose refusal the nodes give.
    AsIs,
    /// It names settings of the proxy alone only, with values Redis takes: the proxy takes them
    /// and answers `+OK` itself.
    ProxyOnly,
    /// This rest goes to the nodes; the proxy takes its settings once they answered `+OK`.
    Nodes(Request),
    /// It names a setting of the proxy's with a value Redis takes but cannot apply: refused as
    /// Redis refuses it, nothing changed anywhere.
    Refused(ProxyError),
}

/// How `request` is carried out, when it is a `CONFIG SET` ([`Plan`]); anything else is sent as
/// it came.
pub(super) fn plan(request: &Request) -> Plan {
    if !is_config_set(request) || !request.argc().is_multiple_of(2) {
        return Plan::AsIs;
    }
    let names = (2..request.argc()).step_by(2);
    let repeated = |i: usize| (2..i).step_by(2).any(|j| request.arg(j).eq_ignore_ascii_case(request.arg(i)));
    if names.clone().any(|i| kept(request.arg(i)).is_some() && repeated(i)) {
        return Plan::AsIs;
    }
    let mut rest: Vec<Cow<'_, [u8]>> = vec![Cow::Borrowed(request.arg(0)), Cow::Borrowed(request.arg(1))];
    let mut changed = false;
    let mut unapplied = None;
    for i in names {
        let (name, value) = (request.arg(i), request.arg(i + 1));
        match kept(name).map_or(ForNodes::All, |kept| (kept.for_nodes)(value)) {
            ForNodes::All => rest.extend([Cow::Borrowed(name), Cow::Borrowed(value)]),
            ForNodes::Nothing => changed = true,
            ForNodes::Part(part) => {
                rest.extend([Cow::Borrowed(name), Cow::Owned(part)]);
                changed = true;
            }
            ForNodes::Refused => return Plan::AsIs,
            // Redis applies after every value was taken (a refused value comes first), and names
            // the setting by its own name.
            ForNodes::Unapplied(error) => {
                let name = String::from_utf8_lossy(kept(name).map_or(name, |kept| kept.name));
                unapplied
                    .get_or_insert(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {error}"));
                changed = true;
            }
        }
    }
    match (unapplied, changed, rest.len()) {
        // Refused for all of it, as Redis refuses the whole command (a refused value of another
        // parameter would come first on a node: that one the proxy cannot know of).
        (Some(error), _, _) => Plan::Refused(ProxyError::command(error)),
        (None, false, _) => Plan::AsIs,
        (None, true, 2) => Plan::ProxyOnly,
        (None, true, _) => Plan::Nodes(Request::from_args(&rest)),
    }
}

/// What of `request` (a command queued in a transaction) goes to the nodes: the rest of a
/// `CONFIG SET` that names settings of the proxy alone ([`plan`]), else all of it.
pub(super) fn for_nodes(request: Request) -> Request {
    match plan(&request) {
        Plan::Nodes(rest) => rest,
        Plan::AsIs | Plan::ProxyOnly | Plan::Refused(_) => request,
    }
}

/// Takes the values of a `CONFIG SET` that was taken ([`Kept`]): by the nodes, or by the proxy
/// alone ([`Plan::ProxyOnly`]).
pub(super) fn keep_own_settings(shared: &Shared, request: &Request) {
    for i in (2..request.argc().saturating_sub(1)).step_by(2) {
        if let Some(kept) = kept(request.arg(i)) {
            (kept.keep)(shared, request.arg(i + 1));
        }
    }
}

/// For a `CONFIG SET` of settings the proxy keeps, what keeps them once the nodes' merged reply
/// is `+OK`: a node changes all the parameters of one CONFIG SET or none, so the proxy changes
/// its own only when the nodes took the command (not when a value, its own or another
/// parameter's, was refused).
pub(super) fn kept_if_ok(shared: &Arc<Shared>, request: &Request) -> Option<OnMerged> {
    keep_where_ok(shared, sets_own_settings(request).then(|| (None, request.clone())).into_iter().collect())
}

/// For a transaction, what keeps the settings of its `CONFIG SET`s (with their places in EXEC's
/// array, in order) whose own element of EXEC's merged reply is `+OK`: those the nodes ran and
/// those the proxy answers in EXEC's array itself ([`Plan::ProxyOnly`]), so that a later one wins
/// as on one node.
pub(super) fn kept_if_ran<'a>(
    shared: &Arc<Shared>,
    commands: impl Iterator<Item = (usize, &'a Request)>,
) -> Option<OnMerged> {
    let settings = commands.filter(|(_, request)| sets_own_settings(request));
    keep_where_ok(shared, settings.map(|(at, request)| (Some(at), request.clone())).collect())
}

/// What keeps each `CONFIG SET` of `settings` whose reply is `+OK`: the merged reply itself, or
/// the element of EXEC's array at its place.
fn keep_where_ok(shared: &Arc<Shared>, settings: Vec<(Option<usize>, Request)>) -> Option<OnMerged> {
    if settings.is_empty() {
        return None;
    }
    let shared = Arc::clone(shared);
    Some(OnMerged::new(move |reply| {
        for (place, request) in &settings {
            let answer = place.map_or(Some(reply), |at| crate::merge::array_element(reply, at));
            if answer == Some(&b"+OK\r\n"[..]) {
                keep_own_settings(&shared, request);
            }
        }
    }))
}

#[cfg(test)]
mod tests;
