//! RESP2 subscribed mode: what a subscriber may still run, and the refusal of the rest, as Redis'
//! `processCommand` and `rejectCommand` give them.

use std::sync::Arc;

use super::super::Session;
use super::super::pipeline::Meta;
use crate::error::ProxyError;
use crate::resp::Request;

const ALLOWED: &str = "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// Whether a RESP2 client in subscribed mode may run `name` (Redis' list in `processCommand`);
/// [`Session::refuse_while_subscribed`] refuses the others.
pub(in crate::session) fn allowed_while_subscribed(name: &[u8]) -> bool {
    const COMMANDS: [&[u8]; 9] = [
        b"subscribe",
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
        b"ping",
        b"quit",
        b"reset",
    ];
    COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

impl Session {
    /// Refuses a command a RESP2 subscriber may not run, named as Redis' table names it
    /// (`lastcmd->fullname`: `client|id` for a subcommand). As Redis' `rejectCommand`, a refused
    /// EXEC ends the transaction and its WATCH and says EXECABORT ([`Session::refused`]).
    pub(super) fn refuse_while_subscribed(&mut self, request: &Request, meta: Meta) {
        let shared = Arc::clone(&self.shared);
        let spec = shared.table.lookup(request);
        let full_name =
            spec.map_or_else(|| String::from_utf8_lossy(request.arg(0)).to_ascii_lowercase(), |s| s.name.clone());
        let refusal = ProxyError::command(format!("ERR Can't execute '{full_name}': {ALLOWED}"));
        let error = match spec {
            Some(spec) => self.refused(spec, refusal),
            None => refusal,
        };
        self.sub_error(error, meta);
    }
}
