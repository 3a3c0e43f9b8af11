//! Which functions declare `no-writes`, as a master's `FUNCTION LIST` says, learned when a
//! `CLIENT PAUSE WRITE` starts.
//!
//! Redis lets an FCALL through a WRITE pause when its function declares `no-writes`, and holds an
//! FCALL_RO of one that does not: a function's flags replace the command's own
//! (`fcallGetCommandFlags`, `scriptFlagsToCmdFlags`). The proxy holds paused requests itself, so
//! it needs those flags too. Functions are loaded on every
//! master alike (FUNCTION LOAD goes to all of them) and a WRITE pause holds FUNCTION LOAD and
//! DELETE, so one master's list, read as the pause starts, holds while it lasts. Until the list is
//! in, every FCALL is held, as one of an unknown function is (FCALL itself may replicate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use redis_protocol::resp2::types::OwnedFrame;

use crate::shared::Shared;
use crate::topology::map::{as_array, as_text, field};
use crate::upstream::connect;

/// Every function's lowercase name (function names are matched regardless of case, as Redis'
/// function dictionary does), with whether it may write (it does not declare `no-writes`);
/// `None` until learned.
#[derive(Debug, Default)]
pub struct FunctionFlags {
    writes: Mutex<Option<HashMap<Vec<u8>, bool>>>,
}

impl FunctionFlags {
    /// Whether function `name` may write, as the list learned says; `None` for a function it does
    /// not name (the command's own flags decide, as Redis' do for a function it does not find).
    pub fn writes(&self, name: &[u8]) -> Option<bool> {
        let writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        writes.as_ref()?.get(&name.to_ascii_lowercase()).copied()
    }

    fn set(&self, writes: Option<HashMap<Vec<u8>, bool>>) {
        *self.writes.lock().unwrap_or_else(PoisonError::into_inner) = writes;
    }
}

/// Reads the functions' flags from the master of slot 0 for a WRITE pause that starts now, then
/// has every client look at what it holds again. An unreachable master leaves every FCALL held.
pub fn learn_for_pause(shared: &Arc<Shared>) {
    shared.functions.set(None);
    let Some(addr) = shared.topology.routing().master(0).map(|m| m.addr().to_string()) else {
        return;
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let settings = shared.topology.upstreams().settings();
        match connect::query(&addr, settings, &[b"FUNCTION", b"LIST"]).await {
            Ok(list) => {
                shared.functions.set(Some(function_writes(&list)));
                shared.clients.signal_all();
            }
            Err(error) => {
                tracing::warn!(node = %addr, %error, "FUNCTION LIST failed: FCALL waits out CLIENT PAUSE WRITE")
            }
        }
    });
}

/// The functions of a `FUNCTION LIST` reply (RESP2: an array of libraries, each a flat array of
/// field names and values, `functions` an array of such arrays), each with whether its `flags`
/// leave out `no-writes`.
fn function_writes(list: &OwnedFrame) -> HashMap<Vec<u8>, bool> {
    let libraries = as_array(list).unwrap_or_default();
    let functions = libraries.iter().filter_map(|library| field(as_array(library)?, "functions").and_then(as_array));
    let writes = |function: &[OwnedFrame]| {
        let flags = field(function, "flags").and_then(as_array).unwrap_or_default();
        !flags.iter().any(|flag| as_text(flag) == Some("no-writes"))
    };
    let named = functions.flatten().filter_map(|function| {
        let function = as_array(function)?;
        Some((field(function, "name").and_then(as_text)?.to_ascii_lowercase().into_bytes(), writes(function)))
    });
    named.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    fn function(name: &str, flags: &[&str]) -> OwnedFrame {
        let flags = OwnedFrame::Array(flags.iter().map(|f| bulk(f)).collect());
        OwnedFrame::Array(vec![bulk("name"), bulk(name), bulk("description"), OwnedFrame::Null, bulk("flags"), flags])
    }

    #[test]
    fn functions_that_declare_no_writes_are_found_in_every_library() {
        let library = |name: &str, functions: Vec<OwnedFrame>| {
            OwnedFrame::Array(vec![
                bulk("library_name"),
                bulk(name),
                bulk("engine"),
                bulk("LUA"),
                bulk("functions"),
                OwnedFrame::Array(functions),
            ])
        };
        let list = OwnedFrame::Array(vec![
            library("one", vec![function("Reader", &["no-writes"]), function("writer", &[])]),
            library(
                "two",
                vec![function("stale_reader", &["allow-stale", "no-writes"]), function("oom", &["allow-oom"])],
            ),
        ]);
        let writes = function_writes(&list);
        let expected: HashMap<Vec<u8>, bool> = [
            (b"reader".to_vec(), false),
            (b"writer".to_vec(), true),
            (b"stale_reader".to_vec(), false),
            (b"oom".to_vec(), true),
        ]
        .into();
        assert_eq!(writes, expected);
        let functions = FunctionFlags::default();
        assert_eq!(functions.writes(b"reader"), None, "nothing known before the list is in");
        functions.set(Some(writes));
        assert_eq!((functions.writes(b"READER"), functions.writes(b"writer")), (Some(false), Some(true)));
        assert_eq!(functions.writes(b"nosuch"), None);
        assert!(function_writes(&OwnedFrame::Error("ERR x".into())).is_empty());
    }
}
