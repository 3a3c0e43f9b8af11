//! Own connections opened ahead of need.
//!
//! A client's own connection (transactions, WATCH, blocking commands) was opened when its first
//! such command came, and that command waited for the connect and the login while other clients'
//! commands for the node, sent after it, went out at once on the pooled connections, which are
//! always open, and reached the node first: a blocking `XREAD … $` then missed the entry another
//! client added right after it, and of two clients blocking on one list the later one was served
//! first. One Redis node runs commands in the order they reach it; so each master keeps a few
//! connections open and logged in for clients to take, and a client's command goes out at once on
//! one. A new spare is opened behind each one taken, with the same terms (protocol and node-side
//! user), so that the next client finds one too.
//!
//! `upstream.spare_connections` (default 2) are kept per node and terms: two clients whose first
//! blocking commands for one node come together both find one. Spares of the plain terms (RESP2,
//! the proxy's own user) are opened with each master's pool; those of other terms once a client
//! with them took or missed one. A node keeps at most four terms' worth: past that the oldest go.
//! Clients that come faster than a connection connects and logs in (a burst of new consumers) may
//! find no spare ready and wait as before. A node reported failing loses its spares
//! (`Topology::report_failure`): one may be dead without knowing it yet.

use std::sync::{Arc, Mutex};

use super::conn::ConnMode;
use super::lanes::same_user;
use super::pool::OwnedConn;
use crate::auth::NodeUser;

/// How many terms' spares a node keeps, at most.
const TERMS_PER_NODE: usize = 4;

/// The spare own connections of every node.
#[derive(Debug)]
pub struct Spares {
    kept: Mutex<Vec<Spare>>,
    /// Spares kept per node and terms (`upstream.spare_connections`).
    per_terms: usize,
}

/// One spare: a connection to `addr` logged in with `terms`.
#[derive(Debug)]
struct Spare {
    addr: String,
    terms: Terms,
    conn: OwnedConn,
}

/// What a connection is logged in with, for the commands of a client: its protocol and its
/// node-side user.
#[derive(Debug, Clone)]
pub struct Terms {
    resp3: bool,
    user: Option<Arc<NodeUser>>,
}

impl Terms {
    /// The terms of an own connection opened in `mode`; `None` for one that is not a plain own
    /// connection (a subscription's, one that must wait before connecting).
    pub fn of(mode: &ConnMode) -> Option<Terms> {
        let plain = mode.pushes.is_none() && mode.connect_after.is_zero() && !mode.reconnect && !mode.readonly;
        plain.then(|| Terms { resp3: mode.resp3, user: mode.user.clone() })
    }

    /// The plain terms: RESP2, logged in as the proxy.
    pub fn plain() -> Terms {
        Terms { resp3: false, user: None }
    }

    /// The mode of an own connection with these terms.
    pub fn mode(&self) -> ConnMode {
        ConnMode::owned(self.resp3, self.user.clone())
    }

    fn same(&self, other: &Terms) -> bool {
        self.resp3 == other.resp3 && same_user(self.user.as_ref(), other.user.as_ref())
    }
}

impl Spares {
    /// No spares yet; `per_terms` of each terms once filled (0: none ever).
    pub fn new(per_terms: usize) -> Spares {
        Spares { kept: Mutex::default(), per_terms }
    }

    /// A spare to `addr` with `terms` whose connection has not ended, if one is kept: the oldest
    /// one logged in, else the oldest (it connects sooner than a new one). Spares found ended on
    /// the way are let go.
    pub fn take(&self, addr: &str, terms: &Terms) -> Option<OwnedConn> {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.retain(|spare| !spare.conn.is_closed());
        let fits = |spare: &Spare| spare.addr == addr && spare.terms.same(terms);
        let ready = kept.iter().position(|spare| fits(spare) && spare.conn.node_client_id().is_some());
        let at = ready.or_else(|| kept.iter().position(fits))?;
        Some(kept.remove(at).conn)
    }

    /// Opens spares to `addr` with `terms` (with `open`) until `per_terms` are kept, letting the
    /// node's oldest ones go past [`TERMS_PER_NODE`] terms' worth.
    pub fn fill(&self, addr: &str, terms: &Terms, open: impl Fn() -> OwnedConn) {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let have = kept.iter().filter(|spare| spare.addr == addr && spare.terms.same(terms)).count();
        for _ in have..self.per_terms {
            kept.push(Spare { addr: addr.to_owned(), terms: terms.clone(), conn: open() });
        }
        while kept.iter().filter(|spare| spare.addr == addr).count() > self.per_terms * TERMS_PER_NODE {
            if let Some(oldest) = kept.iter().position(|spare| spare.addr == addr) {
                kept.remove(oldest);
            }
        }
    }

    /// Lets the spares of nodes for which `keep` is false go (their connections close).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|spare| keep(&spare.addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detached(addr: &str, logged_in: bool) -> OwnedConn {
        let (conn, rx) = OwnedConn::detached(addr, logged_in);
        std::mem::forget(rx);
        conn
    }

    #[test]
    fn a_spare_is_taken_by_node_and_terms_logged_in_ones_first() {
        let spares = Spares::new(2);
        let plain = Terms::plain();
        let resp3 = Terms { resp3: true, user: None };
        spares.fill("a:1", &plain, || detached("a:1", false));
        spares.fill("a:1", &plain, || panic!("two are kept already"));
        spares.fill("a:1", &resp3, || detached("a:1", true));
        assert!(spares.take("b:1", &plain).is_none(), "another node's");
        let first = spares.take("a:1", &resp3).expect("the RESP3 one");
        assert!(first.node_client_id().is_some());
        // Of the plain ones none is logged in: the oldest then. One logged in is taken first.
        spares.kept.lock().unwrap().push(Spare {
            addr: "a:1".into(),
            terms: plain.clone(),
            conn: detached("a:1", true),
        });
        assert!(spares.take("a:1", &plain).expect("a plain one").node_client_id().is_some());
        assert!(spares.take("a:1", &plain).expect("a plain one").node_client_id().is_none());
    }

    #[test]
    fn ended_spares_are_let_go_and_a_node_keeps_a_bounded_number() {
        let spares = Spares::new(2);
        let (ended, rx) = OwnedConn::detached("a:1", true);
        rx.close();
        spares.kept.lock().unwrap().push(Spare { addr: "a:1".into(), terms: Terms::plain(), conn: ended });
        assert!(spares.take("a:1", &Terms::plain()).is_none(), "its connection ended");
        // Every user's spares count against the node's bound; the oldest go first.
        let users: Vec<Arc<NodeUser>> = (0..6).map(|i| Arc::new(NodeUser::new(&format!("u{i}"), &[]))).collect();
        for user in &users {
            let terms = Terms { resp3: false, user: Some(Arc::clone(user)) };
            spares.fill("a:1", &terms, || detached("a:1", true));
        }
        assert_eq!(spares.kept.lock().unwrap().len(), 2 * TERMS_PER_NODE);
        assert!(spares.take("a:1", &Terms { resp3: false, user: Some(Arc::clone(&users[0])) }).is_none());
        assert!(spares.take("a:1", &Terms { resp3: false, user: Some(Arc::clone(&users[5])) }).is_some());
        spares.fill("b:1", &Terms::plain(), || detached("b:1", true));
        spares.retain(|addr| addr == "b:1");
        assert!(spares.kept.lock().unwrap().iter().all(|spare| spare.addr == "b:1"));
    }
}
