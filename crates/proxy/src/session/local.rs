//! Commands the proxy answers itself: connection state (PING, ECHO, SELECT, HELLO, CLIENT …) and
//! views of the proxy and of the cluster as a whole (INFO).

pub(crate) mod info;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use std::sync::Arc;

use crate::auth::User;
use crate::command::{CommandFlags, CommandSpec, KeyAccess, parse_integer};
use crate::error::{ProxyError, c_str};
use crate::resp::Request;
use crate::resp::reply::{self, Protocol};
use crate::shared::Shared;

/// Per-client state kept by the proxy instead of by a node.
#[derive(Debug)]
pub struct ClientState {
    pub id: u64,
    pub peer: SocketAddr,
    pub protocol: Protocol,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    /// A QUIT or protocol error was seen: nothing more is read.
    pub closing: bool,
    /// The logged-in user; `None` until AUTH when anonymous clients are refused.
    pub user: Option<Arc<User>>,
    /// The user is the anonymous one, not from an AUTH.
    pub anonymous: bool,
    /// [`Access::generation`](crate::auth::Access::generation) the user was resolved at.
    pub user_generation: u64,
    /// Failed AUTH attempts on this connection.
    pub auth_failures: u32,
    /// `CLIENT REPLY`: whether the client gets its replies.
    pub reply_mode: ReplyMode,
    /// READONLY, CLIENT NO-EVICT and NO-TOUCH: answered by the proxy, shown in CLIENT LIST.
    pub modes: ClientModes,
}

/// Connection modes a client switches on and off, shown as CLIENT LIST's flags `r`, `e` and `T`.
/// The proxy answers them itself: replicas serve reads by `read_from`, and the nodes' eviction and
/// LRU see the proxy's connections, not the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientModes {
    pub readonly: bool,
    pub no_evict: bool,
    pub no_touch: bool,
    /// `CLIENT CAPA redirect` (Valkey 8), shown as `capa=r` from Valkey 8.1 on.
    pub capa_redirect: bool,
}

/// What a request does to the reply mode, which decides whether its own reply is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyControl {
    /// Nothing: its reply follows the mode.
    None,
    /// `CLIENT REPLY …`: it decides its own reply, and a SKIP does not count it as the next
    /// command.
    Decides,
    /// RESET: turns an OFF back on before it answers, but is itself the command a SKIP skips (Redis'
    /// `clearClientConnectionState` clears `CLIENT_REPLY_OFF` and `_SKIP_NEXT`, not the skip in
    /// force for the running command).
    TurnsOn,
}

/// `CLIENT REPLY ON|OFF|SKIP`, as Redis keeps it per client: the commands still run, the proxy
/// only drops the replies it must not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    /// No replies until `CLIENT REPLY ON`.
    Off,
    /// The next command's reply is dropped, then replies are on again.
    SkipNext,
}

impl ClientState {
    /// Whether the reply to the request just read is dropped, given what the request does to the
    /// reply mode itself (`control`, asked only while replies are not plainly on).
    pub fn reply_dropped(&mut self, control: impl FnOnce() -> ReplyControl) -> bool {
        match (self.reply_mode, control) {
            (ReplyMode::On, _) => false,
            (ReplyMode::Off, control) => control() == ReplyControl::None,
            (ReplyMode::SkipNext, control) => {
                if control() == ReplyControl::Decides {
                    return false;
                }
                self.reply_mode = ReplyMode::On;
                true
            }
        }
    }
}

impl ClientState {
    /// The state of a newly connected client.
    pub fn new(id: u64, peer: SocketAddr, user: Option<Arc<User>>, user_generation: u64) -> ClientState {
        ClientState {
            id,
            peer,
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            closing: false,
            anonymous: user.is_some(),
            user,
            user_generation,
            auth_failures: 0,
            reply_mode: ReplyMode::On,
            modes: ClientModes::default(),
        }
    }
}

/// What to do with a locally handled command.
#[derive(Debug)]
pub enum Answer {
    Reply(Bytes),
    /// Refused, as a node would refuse the command.
    Error(ProxyError),
    /// Reply, then close the connection (QUIT).
    ReplyAndClose(Bytes),
    /// Not the proxy's to answer after all: any master knows (COMMAND, COMMAND DOCS …).
    AnyMaster,
    /// INFO: the proxy's own sections, followed by sections of every master, summed.
    WithClusterSections(info::Info),
}

fn upper(arg: &[u8]) -> Vec<u8> {
    arg.to_ascii_uppercase()
}

fn wrong_args(name: &str) -> Answer {
    Answer::Error(ProxyError::arity(name))
}

/// Whether the local command may have changed what CLIENT LIST shows of the client.
pub fn changes_description(request: &Request) -> bool {
    let name = request.arg(0);
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let client_sub = |n: &[u8]| request.argc() > 1 && request.arg(1).eq_ignore_ascii_case(n);
    let client_changes = [&b"setname"[..], b"setinfo", b"no-evict", b"no-touch", b"capa"].into_iter().any(client_sub);
    let changes = [&b"hello"[..], b"auth", b"reset", b"readonly", b"readwrite"].into_iter().any(is);
    changes || (is(b"client") && client_changes)
}

/// Answers a command the command table marks as local.
pub fn answer(state: &mut ClientState, shared: &Shared, request: &Request) -> Answer {
    let name = upper(request.arg(0));
    let argc = request.argc();
    match name.as_slice() {
        b"PING" => match argc {
            1 => Answer::Reply(Bytes::from_static(b"+PONG\r\n")),
            2 => Answer::Reply(reply::bulk(request.arg(1))),
            // The table's arity (-1) allows any count; Redis' pingCommand then refuses more than one.
            _ => wrong_args("ping"),
        },
        b"ECHO" => Answer::Reply(reply::bulk(request.arg(1))),
        b"QUIT" => Answer::ReplyAndClose(reply::ok()),
        // Parsed as Redis' `getIntFromObjectOrReply` parses it; only then is an index other
        // than 0 refused.
        b"SELECT" => match parse_integer(request.arg(1)) {
            Some(0) => Answer::Reply(reply::ok()),
            None => Answer::Error(ProxyError::command("ERR value is not an integer or out of range")),
            Some(index) if i32::try_from(index).is_err() => Answer::Error(ProxyError::command(
                "ERR value is out of range, value must between -2147483648 and 2147483647",
            )),
            Some(_) => {
                Answer::Error(ProxyError::command("ERR DB index is out of range (a Redis Cluster has only database 0)"))
            }
        },
        b"READONLY" | b"READWRITE" => {
            state.modes.readonly = name.as_slice() == b"READONLY";
            Answer::Reply(reply::ok())
        }
        b"RESET" => {
            // Redis' clearClientConnectionState: READONLY always ends; NO-EVICT (and NO-TOUCH,
            // new in 7.2) only from 7.2 on. Valkey 8.1 keeps the declared capabilities.
            let mut kept = match crate::version_at_least(&shared.topology.reported_version(), 7, 2) {
                true => ClientModes::default(),
                false => ClientModes { no_evict: state.modes.no_evict, ..ClientModes::default() },
            };
            kept.capa_redirect = state.modes.capa_redirect;
            // The library behind the connection stays too (CLIENT SETINFO's lib-name and lib-ver).
            let library = (state.lib_name.take(), state.lib_ver.take());
            *state = ClientState::new(state.id, state.peer, shared.access.anonymous_user(), shared.access.generation());
            state.modes = kept;
            (state.lib_name, state.lib_ver) = library;
            Answer::Reply(Bytes::from_static(b"+RESET\r\n"))
        }
        b"AUTH" => auth(state, shared, request),
        b"HELLO" => hello(state, shared, request),
        b"CLIENT" => client(state, request),
        b"INFO" => match info::info(shared, state, request) {
            info if info.cluster_sections.is_empty() => Answer::Reply(reply::text(state.protocol, info.own.as_bytes())),
            // Data numbers live on the masters: the session adds their sums to the proxy's sections.
            info => Answer::WithClusterSections(info),
        },
        b"COMMAND" => command(shared, request),
        // ACL WHOAMI is the only ACL subcommand the table lets through; users live in the file.
        b"ACL" => Answer::Reply(reply::bulk(state.user.as_ref().map_or(&b"default"[..], |u| u.name.as_bytes()))),
        _ => Answer::Error(ProxyError::command(format!(
            "ERR unsupported command '{}' in proxy",
            String::from_utf8_lossy(request.arg(0))
        ))),
    }
}

/// Failed logins one connection may make before it is closed, to slow down password guessing.
const MAX_AUTH_FAILURES: u32 = 5;

/// Checks that the client may run `spec`: logged in (or a command allowed before login), and
/// permitted by its user's ACL rules. `None`: go ahead; `Some(reply)`: the refusal.
#[inline]
pub fn authorize(
    state: &mut ClientState,
    shared: &Shared,
    spec: &CommandSpec,
    request: &Request,
    scratch: &mut Vec<(usize, KeyAccess)>,
) -> Option<ProxyError> {
    match shared.access.checks_permissions() {
        true => authorize_user(state, shared, spec, request, scratch),
        false => None,
    }
}

/// [`authorize`] when users have permissions to check. Out of line: inlined into every request's
/// path, the permission check's code made that path's frame large for proxies without users.
#[inline(never)]
fn authorize_user(
    state: &mut ClientState,
    shared: &Shared,
    spec: &CommandSpec,
    request: &Request,
    scratch: &mut Vec<(usize, KeyAccess)>,
) -> Option<ProxyError> {
    let access = &shared.access;
    let generation = access.generation();
    if state.user_generation != generation {
        // The ACL file was reloaded: a user turned off or removed is refused from now on.
        state.user_generation = generation;
        state.user = match &state.user {
            Some(_) if state.anonymous => access.anonymous_user(),
            Some(user) => access.current(&user.name),
            None => None,
        };
    }
    let Some(user) = &state.user else {
        return (!spec.flags.contains(CommandFlags::NO_AUTH)).then_some(ProxyError::NoAuth);
    };
    let denied = user.check(spec, request, scratch).err()?;
    // Worded as the nodes' version words it (7.2 on names the user); out of the common path.
    let since_7_2 = crate::version_at_least(&shared.topology.reported_version(), 7, 2);
    Some(ProxyError::Denied(denied.worded(&user.name, since_7_2)))
}

/// Logs the client in as `name`; counts and limits failures.
fn log_in(state: &mut ClientState, shared: &Shared, name: &[u8], password: &[u8]) -> Result<(), Answer> {
    let name = String::from_utf8_lossy(name);
    match shared.access.authenticate(&name, password) {
        Ok(user) => {
            state.user = Some(user);
            state.anonymous = false;
            state.user_generation = shared.access.generation();
            Ok(())
        }
        Err(error) => {
            state.auth_failures += 1;
            shared.metrics.auth_failures_total.inc();
            // The user name helps operators; the password is never logged.
            crate::log_limited!(10, warn, client = state.id, peer = %state.peer, user = %name, failures = state.auth_failures, "authentication failed");
            let error = ProxyError::Auth(error);
            if state.auth_failures >= MAX_AUTH_FAILURES {
                Err(Answer::ReplyAndClose(error.to_resp()))
            } else {
                Err(Answer::Error(error))
            }
        }
    }
}

/// `AUTH [user] password`. With only a password the user is `default`, as in Redis.
fn auth(state: &mut ClientState, shared: &Shared, request: &Request) -> Answer {
    let (name, password) = match request.argc() {
        2 if !shared.access.has_passwords() => {
            return Answer::Error(ProxyError::command(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ));
        }
        2 => (&b"default"[..], request.arg(1)),
        3 => (request.arg(1), request.arg(2)),
        _ => return Answer::Error(ProxyError::command("ERR syntax error")),
    };
    match log_in(state, shared, name, password) {
        Ok(()) => Answer::Reply(reply::ok()),
        Err(answer) => answer,
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(state: &mut ClientState, shared: &Shared, request: &Request) -> Answer {
    let protocol = match request.argc() {
        1 => state.protocol,
        // Redis' strict integer parse: `+3`, `03` and `-0` are not integers.
        _ => match parse_integer(request.arg(1)) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Answer::Error(ProxyError::command("NOPROTO unsupported protocol version")),
            None => {
                return Answer::Error(ProxyError::command("ERR Protocol version is not an integer or out of range"));
            }
        },
    };
    let name = match hello_options(state, shared, request) {
        Ok(name) => name,
        Err(answer) => return answer,
    };
    if state.user.is_none() {
        // The nodes' version's text: Redis 7.2 added `<proto>`.
        let proto = match crate::version_at_least(&shared.topology.reported_version(), 7, 2) {
            true => "<proto> ",
            false => "",
        };
        return Answer::Error(ProxyError::command(format!(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO {proto}AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
        )));
    }
    if let Some(name) = name {
        state.name = name;
    }
    // From here on the client's requests use connections that speak its protocol, so replies
    // keep their RESP3 types (maps, sets, doubles, pushes) and pass through untouched.
    state.protocol = protocol;
    let mut out = BytesMut::new();
    reply::put_map_header(&mut out, state.protocol, 7);
    // Valkey calls itself `valkey` with its own version, unless it runs with
    // `extended-redis-compatibility` (then `redis` 7.2.4, its `redis_version`).
    let (server, version) = match shared.topology.valkey().filter(|v| !v.redis_compat) {
        Some(valkey) => ("valkey", valkey.version),
        None => ("redis", shared.topology.reported_version()),
    };
    for (key, value) in [("server", server), ("version", version.as_str())] {
        reply::put_bulk(&mut out, key.as_bytes());
        reply::put_bulk(&mut out, value.as_bytes());
    }
    reply::put_bulk(&mut out, b"proto");
    reply::put_integer(&mut out, if protocol == Protocol::Resp3 { 3 } else { 2 });
    reply::put_bulk(&mut out, b"id");
    reply::put_integer(&mut out, state.id as i64);
    // The proxy looks like one standalone node: cluster-aware clients must not try cluster mode.
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        reply::put_bulk(&mut out, key.as_bytes());
        reply::put_bulk(&mut out, value.as_bytes());
    }
    reply::put_bulk(&mut out, b"modules");
    reply::put_header(&mut out, b'*', 0);
    Answer::Reply(out.freeze())
}

/// HELLO's options: AUTH logs in, SETNAME's name is checked and returned to be set once the client
/// is known to be logged in (`None`: no SETNAME) — Redis 7.2's order, which reads every option
/// first (Valkey 8 too). Redis 7.0 logs in and sets the name as it reads each option, so an
/// error in a later one leaves them done: with 7.0 nodes the proxy does the same.
fn hello_options(
    state: &mut ClientState,
    shared: &Shared,
    request: &Request,
) -> Result<Option<Option<Vec<u8>>>, Answer> {
    let as_read = !crate::version_at_least(&shared.topology.reported_version(), 7, 2);
    let (mut auth, mut name) = (None, None);
    let mut i = 2;
    while i < request.argc() {
        match upper(request.arg(i)).as_slice() {
            b"AUTH" if i + 2 < request.argc() => {
                auth = Some((request.arg(i + 1), request.arg(i + 2)));
                i += 3;
            }
            // Checked where Redis checks it, before the options after it and the login.
            b"SETNAME" if i + 1 < request.argc() => {
                name = Some(client_name(request.arg(i + 1))?);
                i += 2;
            }
            _ => {
                let option = c_str(request.arg(i), usize::MAX);
                return Err(Answer::Error(ProxyError::quoting(&[b"ERR Syntax error in HELLO option '", option, b"'"])));
            }
        }
        if as_read {
            if let Some((user, password)) = auth.take() {
                log_in(state, shared, user, password)?;
            }
            if let Some(name) = name.take() {
                state.name = name;
            }
        }
    }
    if let Some((user, password)) = auth {
        log_in(state, shared, user, password)?;
    }
    Ok(name)
}

/// The client name `name` sets (CLIENT SETNAME, HELLO's SETNAME): none when it is empty, as
/// Redis clears the name then; Redis' error for a name with spaces, newlines or other bytes
/// outside `!`..=`~` (they would break CLIENT LIST's format).
fn client_name(name: &[u8]) -> Result<Option<Vec<u8>>, Answer> {
    if !is_client_attr(name) {
        return Err(Answer::Error(ProxyError::command(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        )));
    }
    Ok((!name.is_empty()).then(|| name.to_vec()))
}

/// Whether a client name or library attribute has only the bytes Redis allows: `!`..=`~`.
fn is_client_attr(value: &[u8]) -> bool {
    value.iter().all(|b| (b'!'..=b'~').contains(b))
}

fn client(state: &mut ClientState, request: &Request) -> Answer {
    let sub = upper(request.arg(1));
    match (sub.as_slice(), request.argc()) {
        (b"SETNAME", 3) => match client_name(request.arg(2)) {
            Ok(name) => {
                state.name = name;
                Answer::Reply(reply::ok())
            }
            Err(answer) => answer,
        },
        (b"GETNAME", 2) => match &state.name {
            Some(name) => Answer::Reply(reply::bulk(name)),
            None => Answer::Reply(reply::null(state.protocol)),
        },
        (b"ID", 2) => Answer::Reply(reply::integer(state.id as i64)),
        (b"SETINFO", 4) => {
            let field = match upper(request.arg(2)).as_slice() {
                b"LIB-NAME" => &mut state.lib_name,
                b"LIB-VER" => &mut state.lib_ver,
                _ => {
                    let attr = c_str(request.arg(2), usize::MAX);
                    return Answer::Error(ProxyError::quoting(&[b"ERR Unrecognized option '", attr, b"'"]));
                }
            };
            // Redis 7.2's check (it keeps CLIENT LIST splittable by spaces); empty clears.
            let value = request.arg(3);
            if !is_client_attr(value) {
                // The option as the client spelled it (ASCII: it matched one above).
                let attr = String::from_utf8_lossy(request.arg(2));
                let error = format!("ERR {attr} cannot contain spaces, newlines or special characters.");
                return Answer::Error(ProxyError::command(error));
            }
            *field = (!value.is_empty()).then(|| value.to_vec());
            Answer::Reply(reply::ok())
        }
        (b"NO-EVICT" | b"NO-TOUCH", 3) => {
            let on = match upper(request.arg(2)).as_slice() {
                b"ON" => true,
                b"OFF" => false,
                _ => return Answer::Error(ProxyError::command("ERR syntax error")),
            };
            match sub.as_slice() {
                b"NO-EVICT" => state.modes.no_evict = on,
                _ => state.modes.no_touch = on,
            }
            Answer::Reply(reply::ok())
        }
        // Valkey 8: capabilities a client declares (`redirect`: it follows -REDIRECT from a
        // replica). The proxy never redirects its clients, so every capability is accepted and
        // changes nothing, as unknown ones do on a node. Arity (-3) is checked by the table.
        (b"CAPA", _) => {
            state.modes.capa_redirect |= (2..request.argc()).any(|i| request.arg(i).eq_ignore_ascii_case(b"redirect"));
            Answer::Reply(reply::ok())
        }
        // OFF and SKIP are not answered at all (Redis' `clientCommand`); SKIP while OFF changes nothing.
        (b"REPLY", 3) => match upper(request.arg(2)).as_slice() {
            b"ON" => {
                state.reply_mode = ReplyMode::On;
                Answer::Reply(reply::ok())
            }
            b"OFF" => {
                state.reply_mode = ReplyMode::Off;
                Answer::Reply(Bytes::new())
            }
            b"SKIP" => {
                if state.reply_mode != ReplyMode::Off {
                    state.reply_mode = ReplyMode::SkipNext;
                }
                Answer::Reply(Bytes::new())
            }
            _ => Answer::Error(ProxyError::command("ERR syntax error")),
        },
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO" | b"NO-EVICT" | b"NO-TOUCH", _) => {
            wrong_args(&format!("client|{}", String::from_utf8_lossy(&sub).to_lowercase()))
        }
        _ => Answer::Error(ProxyError::command(format!(
            "ERR unsupported command 'CLIENT {}' in proxy",
            String::from_utf8_lossy(request.arg(1))
        ))),
    }
}

/// `COMMAND GETKEYS` is answered from the proxy's own table (it is what the proxy routes by);
/// the rest of `COMMAND` describes the servers, so a master answers it.
fn command(shared: &Shared, request: &Request) -> Answer {
    if request.argc() < 3 || !request.arg(1).eq_ignore_ascii_case(b"getkeys") {
        return Answer::AnyMaster;
    }
    // Redis' GETKEYS rules, which differ from routing's: no arity check before the key search,
    // channels are not keys, keys in key-spec order.
    let args: Vec<&[u8]> = (2..request.argc()).map(|i| request.arg(i)).collect();
    match shared.table.command_getkeys(args.as_slice()) {
        Ok(positions) => {
            let keys: Vec<&[u8]> = positions.iter().filter_map(|&i| args.get(i).copied()).collect();
            Answer::Reply(reply::bulk_array(&keys))
        }
        Err(error) => Answer::Error(ProxyError::command(format!("ERR {error}"))),
    }
}
