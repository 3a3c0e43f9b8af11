//! `CLIENT LIST`, `CLIENT INFO`, `CLIENT KILL`, `CLIENT PAUSE`, `CLIENT UNPAUSE` and `CLIENT
//! UNBLOCK` on the proxy's clients: their arguments, parsed and refused as Redis' `clientCommand`
//! does.

use std::time::Duration;

use super::{Asking, ClientEntry, Clients, LineFormat, Unblock};
use crate::command::{CommandTable, parse_integer};
use crate::error::{ProxyError, c_str};
use crate::session::ClientState;

/// `CLIENT LIST`, `CLIENT INFO`, `CLIENT KILL`, `CLIENT PAUSE`, `CLIENT UNPAUSE` and `CLIENT
/// UNBLOCK`, on the proxy's clients; `me` is the client asking (`asking`: what its line shows of
/// the request being run), `format` the line of the nodes' version.
pub fn command(
    clients: &Clients,
    names: &CommandTable,
    me: &ClientState,
    request: &crate::resp::Request,
    format: LineFormat,
    asking: Asking,
    user_exists: impl Fn(&str) -> bool,
) -> Result<bytes::Bytes, ProxyError> {
    use crate::resp::reply;
    let args: Vec<&[u8]> = (2..request.argc()).map(|i| request.arg(i)).collect();
    let sub = request.arg(1).to_ascii_lowercase();
    let asking = Some(asking);
    let lines = |text: String| Ok(reply::text(me.protocol, text.as_bytes()));
    match sub.as_slice() {
        b"info" => lines(clients.list(|e| e.id == me.id, names, format, asking)),
        b"list" if args.len() > 1 && args[0].eq_ignore_ascii_case(b"id") => {
            let ids = args[1..].iter().map(|id| parse_integer(id));
            let ids = ids.collect::<Option<Vec<i64>>>().ok_or_else(|| ProxyError::command("ERR Invalid client ID"))?;
            lines(clients.list_ids(&ids, names, format, asking))
        }
        b"list" => lines(clients.list(list_filter(&args)?, names, format, asking)),
        b"kill" => match args.as_slice() {
            // The old form: one address, `+OK` or an error.
            [addr] => match clients.kill(|e| e.socket.peer.to_string().as_bytes() == *addr) {
                0 => Err(ProxyError::command("ERR No such client")),
                _ => Ok(reply::ok()),
            },
            _ => Ok(reply::integer(clients.kill(kill_filter(&args, me.id, user_exists)?) as i64)),
        },
        // Redis' clientCommand: the mode first, then the timeout.
        b"pause" if args.len() <= 2 => {
            let writes_only = match args.get(1).map(|m| m.to_ascii_lowercase()).as_deref() {
                None | Some(b"all") => false,
                Some(b"write") => true,
                Some(_) => return Err(ProxyError::command("ERR CLIENT PAUSE mode must be WRITE or ALL")),
            };
            let ms = args.first().and_then(|t| parse_integer(t));
            let ms = ms.ok_or_else(|| ProxyError::command("ERR timeout is not an integer or out of range"))?;
            let ms = u64::try_from(ms).map_err(|_| ProxyError::command("ERR timeout is negative"))?;
            clients.pause(Duration::from_millis(ms), writes_only);
            Ok(reply::ok())
        }
        b"unpause" => {
            clients.unpause();
            Ok(reply::ok())
        }
        // Redis' clientCommand: the reason first, then the id.
        b"unblock" if args.len() <= 2 => {
            let how = match args.get(1).map(|a| a.to_ascii_lowercase()).as_deref() {
                None | Some(b"timeout") => Unblock::Timeout,
                Some(b"error") => Unblock::Error,
                Some(_) => return Err(ProxyError::command("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")),
            };
            match args.first().and_then(|id| parse_integer(id)) {
                // No client has a negative id: nobody to unblock, as on Redis.
                Some(id) => Ok(reply::integer(i64::from(u64::try_from(id).is_ok_and(|id| clients.unblock(id, how))))),
                None => Err(ProxyError::command("ERR value is not an integer or out of range")),
            }
        }
        _ => Err(subcommand_syntax_error(request)),
    }
}

/// Redis' `addReplySubcommandSyntaxError`: the subcommand as the client spelled it.
fn subcommand_syntax_error(request: &crate::resp::Request) -> ProxyError {
    let (sub, command) = (c_str(request.arg(1), 128), c_str(request.arg(0), usize::MAX).to_ascii_uppercase());
    ProxyError::quoting(&[
        b"ERR unknown subcommand or wrong number of arguments for '",
        sub,
        b"'. Try ",
        &command,
        b" HELP.",
    ])
}

type Filter<'a> = Box<dyn Fn(&ClientEntry) -> bool + 'a>;

/// `CLIENT LIST [TYPE type]` (the ID form is `Clients::list_ids`).
fn list_filter<'a>(args: &[&'a [u8]]) -> Result<Filter<'a>, ProxyError> {
    match args.split_first() {
        None => Ok(Box::new(|_| true)),
        Some((word, rest)) if word.eq_ignore_ascii_case(b"type") && rest.len() == 1 => client_type(rest[0]),
        Some(_) => Err(ProxyError::command("ERR syntax error")),
    }
}

/// `TYPE normal|pubsub|master|replica`: the proxy's clients are normal or subscribers; none is
/// a master or a replica.
fn client_type<'a>(kind: &[u8]) -> Result<Filter<'a>, ProxyError> {
    match kind.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(Box::new(|e| !e.is_subscribed())),
        b"pubsub" => Ok(Box::new(|e| e.is_subscribed())),
        b"master" | b"replica" | b"slave" => Ok(Box::new(|_| false)),
        _ => Err(ProxyError::quoting(&[b"ERR Unknown client type '", c_str(kind, usize::MAX), b"'"])),
    }
}

/// `CLIENT KILL` filters: ID, ADDR, LADDR, USER, TYPE, MAXAGE, SKIPME (yes by default); all must
/// match. An option given twice keeps its last value, as Redis' parse overwrites it.
fn kill_filter<'a>(args: &[&'a [u8]], me: u64, user_exists: impl Fn(&str) -> bool) -> Result<Filter<'a>, ProxyError> {
    if args.is_empty() {
        return Err(ProxyError::command("ERR syntax error"));
    }
    let mut filters: Vec<(Vec<u8>, Filter<'a>)> = Vec::new();
    let mut skip_me = true;
    // Left to right, as Redis parses them: the first bad option is the one reported.
    for pair in args.chunks(2) {
        let [name, value] = *pair else {
            return Err(ProxyError::command("ERR syntax error"));
        };
        let name = name.to_ascii_lowercase();
        let filter: Filter<'a> = match name.as_slice() {
            b"id" => {
                let id = parse_integer(value)
                    .filter(|&n| n >= 1)
                    .ok_or(ProxyError::command("ERR client-id should be greater than 0"))?;
                Box::new(move |e| i64::try_from(e.id) == Ok(id))
            }
            b"addr" => Box::new(move |e| e.socket.peer.to_string().as_bytes() == value),
            b"laddr" => Box::new(move |e| e.socket.local.to_string().as_bytes() == value),
            b"user" => {
                let user = String::from_utf8_lossy(value).into_owned();
                if !user_exists(&user) {
                    return Err(ProxyError::quoting(&[b"ERR No such user '", c_str(value, usize::MAX), b"'"]));
                }
                Box::new(move |e| e.user() == user)
            }
            b"type" => client_type(value)?,
            // Redis 7.4's: whole seconds, clients at least that old.
            b"maxage" => {
                let max =
                    parse_integer(value).ok_or(ProxyError::command("ERR maxage is not an integer or out of range"))?;
                let max = u64::try_from(max)
                    .ok()
                    .filter(|&m| m > 0)
                    .ok_or(ProxyError::command("ERR maxage should be greater than 0"))?;
                Box::new(move |e| e.age().as_secs() >= max)
            }
            b"skipme" => {
                skip_me = match value.to_ascii_lowercase().as_slice() {
                    b"yes" => true,
                    b"no" => false,
                    _ => return Err(ProxyError::command("ERR syntax error")),
                };
                continue;
            }
            _ => return Err(ProxyError::command("ERR syntax error")),
        };
        filters.retain(|(kind, _)| *kind != name);
        filters.push((name, filter));
    }
    Ok(Box::new(move |e| !(skip_me && e.id == me) && filters.iter().all(|(_, f)| f(e))))
}
