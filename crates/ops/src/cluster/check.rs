//! `cluster check NODE [--fix] [--zone NODE=ZONE ...] [--min-replicas N]`.
//!
//! Asks `NODE` for the member list, then every member for its own `CLUSTER NODES` and
//! `cluster_state`, and reports: uncovered slots (as ranges), open slots (MIGRATING/IMPORTING),
//! masters with fewer than `--min-replicas` (default 1) healthy replicas, replicas in their
//! master's zone (zones from `--zone`, as for `create`), nodes whose slot map or member list
//! differs from `NODE`'s, config-epoch collisions between slot owners, nodes flagged `fail`/`fail?`
//! /`noaddr`, unreachable nodes and nodes whose `cluster_state` is not ok. Exit 0 when none, 1
//! with the list otherwise.
//!
//! `--fix` closes open slots first with the migration engine's rules
//! ([`super::migrate::close_open_slots`]): a slot MIGRATING on A and IMPORTING on B gets its
//! remaining keys moved to B and is assigned to B on every master (keys only on B: same outcome);
//! a lone IMPORTING mark with no keys behind it is dropped. It then waits for the views to agree
//! and checks again.

use std::collections::BTreeMap;
use std::time::Duration;

use super::migrate::{MoveOpts, close_open_slots};
use super::node::{ConnArgs, Connector, Pool};
use super::state::{ClusterState, short};
use super::{ClusterError, parse_duration, parse_zone, summary_table, wait_for, zone_map};
use redisforge_cluster::nodes::fmt_ranges;

/// `redisforge-ops cluster check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Any node of the cluster, `host:port`.
    pub node: String,
    /// Close slots left open by an interrupted migration, then check again.
    #[arg(long)]
    pub fix: bool,
    /// Failure zone of a node, `host:port=zone`; replicas sharing their master's zone are reported.
    #[arg(long = "zone", value_name = "NODE=ZONE", value_parser = parse_zone)]
    pub zones: Vec<(String, String)>,
    /// Report masters with fewer healthy replicas than this.
    #[arg(long, default_value_t = 1)]
    pub min_replicas: usize,
    /// Keys per MIGRATE for --fix.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Upper bound on the wait for the views to agree after --fix.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `cluster check`; prints the layout and the report on stdout.
///
/// # Errors
/// [`ClusterError::Unhealthy`] when problems remain; node errors when `NODE` cannot be read or
/// `--fix` fails.
pub fn run(args: &CheckArgs) -> Result<(), ClusterError> {
    let zones = zone_map(&args.zones)?;
    let mut pool = Pool::new(Connector::new(&args.conn)?);
    let mut state = ClusterState::load(&mut pool, &args.node)?;
    if args.fix && !state.open_slots().is_empty() {
        let actions = close_open_slots(&mut pool, &state, MoveOpts { batch: args.batch.max(1) })?;
        for action in &actions {
            println!("fixed: {action}");
        }
        let settled = wait_for(args.timeout, "the views to agree after --fix", || {
            let s = ClusterState::load(&mut pool, &args.node).map_err(|e| e.to_string())?;
            match (s.open_slots().first(), s.disagreements().first()) {
                (None, None) => Ok(s),
                (Some(open), _) => Err(format!("slot {} still open", open.slot)),
                (_, Some((addr, why))) => Err(format!("{addr} {why}")),
            }
        });
        state = match settled {
            Ok(s) => s,
            // Not fatal: the report below says what still disagrees.
            Err(e) => {
                eprintln!("warning: {e}");
                ClusterState::load(&mut pool, &args.node)?
            }
        };
    }
    print!("{}", summary_table(&state.view, &zones));
    let problems = diagnose(&state, &zones, args.min_replicas);
    if problems.is_empty() {
        println!("OK: {} nodes, all {} slots covered, no open slots, views agree", state.view.nodes.len(), 16384);
        return Ok(());
    }
    println!("PROBLEMS ({}):", problems.len());
    for p in &problems {
        println!("  - {p}");
    }
    Err(ClusterError::Unhealthy(problems.len()))
}

/// Every problem found in `state`, one readable line each; empty when healthy.
pub fn diagnose(state: &ClusterState, zones: &BTreeMap<String, String>, min_replicas: usize) -> Vec<String> {
    let mut out = Vec::new();
    let name = |id: &str| state.addr_of(id).map_or_else(|| short(id).to_owned(), |a| format!("{a} ({})", short(id)));

    let uncovered = state.uncovered();
    if !uncovered.is_empty() {
        let n: usize = uncovered.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
        out.push(format!("{n} slot(s) not covered by any master: {}", fmt_ranges(&uncovered)));
    }
    for open in state.open_slots() {
        let (mark, dir) = if open.migrating { ("MIGRATING", "to") } else { ("IMPORTING", "from") };
        out.push(format!("slot {} is open: {mark} on {} {dir} {}", open.slot, name(&open.node), name(&open.peer)));
    }
    for m in state.view.masters().filter(|m| !m.slots.is_empty() && !m.is_failing()) {
        let healthy: Vec<_> = state.view.replicas_of(&m.id).filter(|r| !r.is_failing()).collect();
        if healthy.len() < min_replicas {
            out.push(format!(
                "master {} has {} healthy replica(s), expected at least {min_replicas}",
                name(&m.id),
                healthy.len()
            ));
        }
        let master_zone = zones.get(&m.addr());
        for r in healthy {
            if master_zone.is_some() && zones.get(&r.addr()) == master_zone {
                out.push(format!(
                    "replica {} is in the same zone ({}) as its master {}",
                    r.addr(),
                    master_zone.map_or("", String::as_str),
                    m.addr()
                ));
            }
        }
    }
    for (addr, why) in state.disagreements() {
        out.push(format!("node {addr} disagrees with the seed: {why}"));
    }
    let mut epochs: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for m in state.view.masters().filter(|m| !m.slots.is_empty()) {
        epochs.entry(m.config_epoch).or_default().push(m.addr());
    }
    for (epoch, owners) in epochs.into_iter().filter(|(_, o)| o.len() > 1) {
        out.push(format!("config epoch {epoch} is shared by masters {}", owners.join(", ")));
    }
    for n in state.view.nodes.iter().filter(|n| n.is_failing()) {
        let flag = if n.flags.fail {
            "fail"
        } else if n.flags.pfail {
            "fail?"
        } else {
            "noaddr"
        };
        out.push(format!("node {} is flagged {flag}", name(&n.id)));
    }
    for (addr, why) in &state.unreachable {
        if !state.view.by_addr(addr).is_some_and(|n| n.flags.fail) {
            out.push(format!("node {addr} did not answer: {why}"));
        }
    }
    for (id, cluster_state) in &state.states {
        if cluster_state != "ok" {
            out.push(format!("node {} reports cluster_state:{cluster_state}", name(id)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use redisforge_cluster::nodes::View;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn state(lines: &[(&str, String)]) -> ClusterState {
        let views: BTreeMap<String, View> =
            lines.iter().map(|(id, text)| ((*id).to_owned(), View::parse(text).unwrap())).collect();
        let states = lines.iter().map(|(id, _)| ((*id).to_owned(), "ok".to_owned())).collect();
        ClusterState { view: views[A].clone(), views, states, unreachable: Vec::new() }
    }

    fn healthy(me: &str, a_extra: &str, b_extra: &str) -> String {
        let flag = |id| if id == me { "myself,master" } else { "master" };
        let replica = if me == C { "myself,slave" } else { "slave" };
        format!(
            "{A} 127.0.0.1:7000@17000 {} - 0 0 1 connected 0-8191{a_extra}\n\
             {B} 127.0.0.1:7001@17001 {} - 0 0 2 connected 8192-16383{b_extra}\n\
             {C} 127.0.0.1:7002@17002 {replica} {A} 0 0 1 connected\n",
            flag(A),
            flag(B)
        )
    }

    #[test]
    fn a_healthy_cluster_has_no_problems_except_a_missing_replica() {
        let s = state(&[(A, healthy(A, "", "")), (B, healthy(B, "", "")), (C, healthy(C, "", ""))]);
        assert_eq!(diagnose(&s, &BTreeMap::new(), 0), Vec::<String>::new());
        let problems = diagnose(&s, &BTreeMap::new(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("127.0.0.1:7001") && problems[0].contains("0 healthy replica"), "{problems:?}");
    }

    #[test]
    fn open_slots_zones_and_disagreement_are_reported() {
        let a_view = healthy(A, &format!(" [100->-{B}]"), "");
        let b_view = healthy(B, "", &format!(" [100-<-{A}]"));
        // C still believes B owns 0-8191 as well: a disagreement.
        let c_view = healthy(C, "", "").replace("0 0 2 connected 8192-16383", "0 0 2 connected 0-16383");
        let s = state(&[(A, a_view), (B, b_view), (C, c_view)]);
        let zones =
            zone_map(&[("127.0.0.1:7000".into(), "z1".into()), ("127.0.0.1:7002".into(), "z1".into())]).unwrap();
        let problems = diagnose(&s, &zones, 0).join("\n");
        assert!(problems.contains("slot 100 is open: MIGRATING on 127.0.0.1:7000"), "{problems}");
        assert!(problems.contains("slot 100 is open: IMPORTING on 127.0.0.1:7001"), "{problems}");
        assert!(problems.contains("same zone (z1)"), "{problems}");
        assert!(problems.contains("node 127.0.0.1:7002 disagrees") && problems.contains("0-8191"), "{problems}");
    }

    #[test]
    fn a_replica_not_yet_seen_as_one_is_a_disagreement() {
        let c_view = healthy(C, "", "").replace(&format!("myself,slave {A}"), "myself,master -");
        let s = state(&[(A, healthy(A, "", "")), (C, c_view)]);
        let problems = diagnose(&s, &BTreeMap::new(), 0).join("\n");
        assert!(
            problems.contains("roles differ: 127.0.0.1:7002 is master here, replica of aaaaaaaa on the seed"),
            "{problems}"
        );
    }

    #[test]
    fn uncovered_slots_epoch_collisions_and_failures_are_reported() {
        let text = format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8000\n\
             {B} 127.0.0.1:7001@17001 master,fail? - 0 0 1 connected 8192-16383\n"
        );
        let s = state(&[(A, text)]);
        let problems = diagnose(&s, &BTreeMap::new(), 0).join("\n");
        assert!(problems.contains("191 slot(s) not covered by any master: 8001-8191"), "{problems}");
        assert!(problems.contains("config epoch 1 is shared by masters 127.0.0.1:7000, 127.0.0.1:7001"), "{problems}");
        assert!(problems.contains("127.0.0.1:7001") && problems.contains("flagged fail?"), "{problems}");
    }
}
