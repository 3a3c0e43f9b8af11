//! Commands the proxy answers itself: connection state (PING, ECHO, SELECT, HELLO, CLIENT …) and
//! views of the proxy and of the cluster as a whole (INFO).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::Shared;
use crate::resp::Request;
use crate::resp::reply::{self, Protocol};

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
}

impl ClientState {
    /// The state of a newly connected client.
    pub fn new(id: u64, peer: SocketAddr) -> ClientState {
        ClientState { id, peer, protocol: Protocol::Resp2, name: None, lib_name: None, lib_ver: None, closing: false }
    }
}

/// What to do with a locally handled command.
#[derive(Debug)]
pub enum Answer {
    Reply(Bytes),
    /// Reply, then close the connection (QUIT).
    ReplyAndClose(Bytes),
    /// Not the proxy's to answer after all: any master knows (COMMAND, COMMAND DOCS …).
    AnyMaster,
}

fn upper(arg: &[u8]) -> Vec<u8> {
    arg.to_ascii_uppercase()
}

fn wrong_args(name: &str) -> Answer {
    Answer::Reply(reply::error(&format!("ERR wrong number of arguments for '{name}' command")))
}

/// Answers a command the command table marks as local.
pub fn answer(state: &mut ClientState, shared: &Shared, request: &Request) -> Answer {
    let name = upper(request.arg(0));
    let argc = request.argc();
    match name.as_slice() {
        b"PING" => match argc {
            1 => Answer::Reply(Bytes::from_static(b"+PONG\r\n")),
            _ => Answer::Reply(reply::bulk(request.arg(1))),
        },
        b"ECHO" => Answer::Reply(reply::bulk(request.arg(1))),
        b"QUIT" => Answer::ReplyAndClose(reply::ok()),
        b"SELECT" => match request.arg(1) {
            b"0" => Answer::Reply(reply::ok()),
            _ => Answer::Reply(reply::error("ERR DB index is out of range (a Redis Cluster has only database 0)")),
        },
        b"READONLY" | b"READWRITE" => Answer::Reply(reply::ok()),
        b"RESET" => {
            *state = ClientState::new(state.id, state.peer);
            Answer::Reply(Bytes::from_static(b"+RESET\r\n"))
        }
        b"AUTH" => auth(request),
        b"HELLO" => hello(state, request),
        b"CLIENT" => client(state, request),
        b"INFO" => Answer::Reply(reply::bulk(info(shared, state, request).as_bytes())),
        b"COMMAND" => command(shared, request),
        b"ACL" => Answer::Reply(reply::bulk(b"default")),
        _ => Answer::Reply(reply::error(&format!(
            "ERR unsupported command '{}' in proxy",
            String::from_utf8_lossy(request.arg(0))
        ))),
    }
}

/// Without `[auth]` every client is the `default` user with no password, as on a Redis node
/// without `requirepass`; Redis' replies for that case are kept.
fn auth(request: &Request) -> Answer {
    match request.argc() {
        2 => Answer::Reply(reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        )),
        3 if request.arg(1) == b"default" => Answer::Reply(reply::ok()),
        3 => Answer::Reply(reply::error("WRONGPASS invalid username-password pair or user is disabled.")),
        _ => Answer::Reply(reply::error("ERR syntax error")),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(state: &mut ClientState, request: &Request) -> Answer {
    if request.argc() >= 2 {
        match request.arg(1) {
            b"2" => {}
            // RESP3 needs the push and map types end to end; until the proxy speaks RESP3 to the nodes
            // it refuses it the way Redis refuses unknown versions, and clients fall back to RESP2.
            b"3" => return Answer::Reply(reply::error("NOPROTO unsupported protocol version")),
            _ => return Answer::Reply(reply::error("NOPROTO unsupported protocol version")),
        }
    }
    let mut i = 2;
    while i < request.argc() {
        let option = upper(request.arg(i));
        match option.as_slice() {
            b"AUTH" if i + 2 < request.argc() => {
                if request.arg(i + 1) != b"default" {
                    return Answer::Reply(reply::error(
                        "WRONGPASS invalid username-password pair or user is disabled.",
                    ));
                }
                i += 3;
            }
            b"SETNAME" if i + 1 < request.argc() => {
                state.name = Some(request.arg(i + 1).to_vec());
                i += 2;
            }
            _ => {
                return Answer::Reply(reply::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(request.arg(i))
                )));
            }
        }
    }
    state.protocol = Protocol::Resp2;
    let mut out = BytesMut::new();
    reply::put_map_header(&mut out, state.protocol, 7);
    for (key, value) in [("server", "redis"), ("version", crate::REDIS_COMPAT_VERSION)] {
        reply::put_bulk(&mut out, key.as_bytes());
        reply::put_bulk(&mut out, value.as_bytes());
    }
    reply::put_bulk(&mut out, b"proto");
    reply::put_integer(&mut out, 2);
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

fn client(state: &mut ClientState, request: &Request) -> Answer {
    let sub = upper(request.arg(1));
    match (sub.as_slice(), request.argc()) {
        (b"SETNAME", 3) => {
            let name = request.arg(2);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return Answer::Reply(reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            state.name = (!name.is_empty()).then(|| name.to_vec());
            Answer::Reply(reply::ok())
        }
        (b"GETNAME", 2) => match &state.name {
            Some(name) => Answer::Reply(reply::bulk(name)),
            None => Answer::Reply(reply::null(state.protocol)),
        },
        (b"ID", 2) => Answer::Reply(reply::integer(state.id as i64)),
        (b"SETINFO", 4) => {
            let attr = upper(request.arg(2));
            let value = request.arg(3).to_vec();
            match attr.as_slice() {
                b"LIB-NAME" => state.lib_name = Some(value),
                b"LIB-VER" => state.lib_ver = Some(value),
                _ => {
                    return Answer::Reply(reply::error(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(request.arg(2))
                    )));
                }
            }
            Answer::Reply(reply::ok())
        }
        (b"INFO", 2) => Answer::Reply(reply::bulk(client_line(state).as_bytes())),
        (b"NO-EVICT" | b"NO-TOUCH", 3) => Answer::Reply(reply::ok()),
        (b"REPLY", 3) if request.arg(2).eq_ignore_ascii_case(b"on") => Answer::Reply(reply::ok()),
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO" | b"NO-EVICT" | b"NO-TOUCH", _) => {
            wrong_args(&format!("client|{}", String::from_utf8_lossy(&sub).to_lowercase()))
        }
        _ => Answer::Reply(reply::error(&format!(
            "ERR unsupported command 'CLIENT {}' in proxy",
            String::from_utf8_lossy(request.arg(1))
        ))),
    }
}

fn client_line(state: &ClientState) -> String {
    let text = |v: &Option<Vec<u8>>| v.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
    format!(
        "id={} addr={} name={} db=0 resp={} lib-name={} lib-ver={}\n",
        state.id,
        state.peer,
        text(&state.name),
        if state.protocol == Protocol::Resp3 { 3 } else { 2 },
        text(&state.lib_name),
        text(&state.lib_ver),
    )
}

/// `COMMAND GETKEYS` is answered from the proxy's own table (it is what the proxy routes by);
/// the rest of `COMMAND` describes the servers, so a master answers it.
fn command(shared: &Shared, request: &Request) -> Answer {
    if request.argc() < 3 || !request.arg(1).eq_ignore_ascii_case(b"getkeys") {
        return Answer::AnyMaster;
    }
    let args: Vec<&[u8]> = (2..request.argc()).map(|i| request.arg(i)).collect();
    let Some(spec) = shared.table.lookup(args.as_slice()) else {
        return Answer::Reply(reply::error("ERR Invalid command specified"));
    };
    if !spec.arity_ok(args.len()) {
        return Answer::Reply(reply::error("ERR Invalid number of arguments specified for command"));
    }
    let mut positions = Vec::new();
    if let Err(error) = spec.key_positions(args.as_slice(), &mut positions) {
        return Answer::Reply(reply::error(&format!("ERR {error}")));
    }
    if positions.is_empty() {
        return Answer::Reply(reply::error("ERR The command has no key arguments"));
    }
    let keys: Vec<&[u8]> = positions.iter().filter(|&&i| i < args.len()).map(|&i| args[i]).collect();

    Answer::Reply(reply::bulk_array(&keys))
}

/// `INFO`: the proxy's own sections and a summary of the cluster behind it.
fn info(shared: &Shared, state: &ClientState, request: &Request) -> String {
    let wanted = |section: &str| {
        request.argc() < 2
            || (1..request.argc()).any(|i| {
                let arg = request.arg(i);
                arg.eq_ignore_ascii_case(section.as_bytes())
                    || arg.eq_ignore_ascii_case(b"all")
                    || arg.eq_ignore_ascii_case(b"everything")
                    || arg.eq_ignore_ascii_case(b"default")
            })
    };
    let stats = &shared.stats;
    let routing = shared.topology.routing();
    let mut out = String::new();
    if wanted("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nredis_mode:standalone\r\nredisforge_version:{}\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            crate::REDIS_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            stats.started.elapsed().as_secs(),
        );
    }
    if wanted("clients") {
        let _ =
            write!(out, "# Clients\r\nconnected_clients:{}\r\n\r\n", stats.connected_clients.load(Ordering::Relaxed));
    }
    if wanted("proxy") {
        let _ = write!(
            out,
            "# Proxy\r\nclient_id:{}\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntopology_generation:{}\r\n\r\n",
            state.id,
            stats.total_connections.load(Ordering::Relaxed),
            stats.total_commands.load(Ordering::Relaxed),
            routing.generation,
        );
    }
    if wanted("cluster") {
        let covered = routing.map.covered_slots();
        let _ = write!(
            out,
            "# Cluster\r\ncluster_state:{}\r\ncluster_slots_covered:{}\r\ncluster_masters:{}\r\ncluster_known_nodes:{}\r\n\r\n",
            if routing.is_complete() { "ok" } else { "fail" },
            covered,
            routing.map.shards().len(),
            routing.map.nodes().count(),
        );
    }
    if out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}
