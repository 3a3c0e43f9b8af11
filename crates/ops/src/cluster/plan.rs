//! Pure planning for the cluster verbs: the even slot split of `create`, replica placement by zone
//! and host, and the slot moves of `rebalance`, `add` and `remove`. No I/O; unit-tested here.

use redisforge_cluster::slot::SLOT_COUNT;

/// Why no plan exists for the requested shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The node count does not split into masters with `replicas` replicas each.
    #[error("{nodes} nodes do not split into masters with {replicas} replica(s) each (need a multiple of {})", replicas + 1)]
    Shape {
        /// Nodes given.
        nodes: usize,
        /// Replicas per master asked for.
        replicas: usize,
    },
    /// Zones were given for some nodes only.
    #[error("--zone is given for some nodes but not for {0}; give a zone for every node or none")]
    PartialZones(String),
    /// No assignment puts every replica in another zone than its master.
    #[error(
        "cannot place every replica in another zone than its master (master zones: {masters}; replica zones: \
         {replicas}); the first nodes become masters, so reorder the nodes or change the zones"
    )]
    Zones {
        /// Zone of each master, in order.
        masters: String,
        /// Zone of each replica, in order.
        replicas: String,
    },
}

/// Contiguous, even split of the 16384 slots over `masters` masters: master `i` gets
/// `i*16384/M ..= (i+1)*16384/M - 1`, so sizes differ by at most one.
pub fn even_ranges(masters: usize) -> Vec<(u16, u16)> {
    let total = usize::from(SLOT_COUNT);
    (0..masters)
        .map(|i| {
            let first = i * total / masters;
            let last = (i + 1) * total / masters - 1;
            // Both are below 16384 because i < masters.
            (u16::try_from(first).unwrap_or(SLOT_COUNT - 1), u16::try_from(last).unwrap_or(SLOT_COUNT - 1))
        })
        .collect()
}

/// Where a node runs, for replica placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Host part of the address.
    pub host: String,
    /// Failure zone from `--zone`, if any.
    pub zone: Option<String>,
}

/// Chooses a master for every replica; `result[r]` is the master index of replica `r`.
///
/// Every master gets exactly `per_master` replicas. With zones (all or nothing), each replica
/// lands in another zone than its master — a hard rule — and preferably on another host; without
/// zones, another host where possible, else any master.
///
/// # Errors
/// [`PlanError::Shape`] when `replicas.len() != masters.len() * per_master`,
/// [`PlanError::PartialZones`] and [`PlanError::Zones`] as documented there.
pub fn place_replicas(masters: &[Member], replicas: &[Member], per_master: usize) -> Result<Vec<usize>, PlanError> {
    if replicas.len() != masters.len() * per_master {
        return Err(PlanError::Shape { nodes: masters.len() + replicas.len(), replicas: per_master });
    }
    let all = masters.iter().chain(replicas);
    let zoned = all.clone().filter(|m| m.zone.is_some()).count();
    if zoned != 0 && zoned != masters.len() + replicas.len() {
        let missing = all.filter(|m| m.zone.is_none()).map(|m| m.host.clone()).collect::<Vec<_>>();
        return Err(PlanError::PartialZones(missing.join(", ")));
    }
    // Rules from most to least preferred; the first with a complete assignment wins.
    let tiers: &[Rule] = if zoned > 0 { &[Rule::ZoneAndHost, Rule::Zone] } else { &[Rule::Host, Rule::Any] };
    for &rule in tiers {
        if let Some(found) = assign(masters, replicas, per_master, rule) {
            return Ok(found);
        }
    }
    if zoned > 0 {
        let zones = |ms: &[Member]| ms.iter().map(|m| m.zone.clone().unwrap_or_default()).collect::<Vec<_>>().join(",");
        return Err(PlanError::Zones { masters: zones(masters), replicas: zones(replicas) });
    }
    // Unreachable: the last tier without zones allows every pair and the shape was checked.
    Err(PlanError::Shape { nodes: masters.len() + replicas.len(), replicas: per_master })
}

/// Which replica/master pairs a placement tier allows.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Another zone and another host.
    ZoneAndHost,
    /// Another zone.
    Zone,
    /// Another host.
    Host,
    /// Any master.
    Any,
}

impl Rule {
    fn allows(self, replica: &Member, master: &Member) -> bool {
        let (zone, host) = (replica.zone != master.zone, replica.host != master.host);
        match self {
            Rule::ZoneAndHost => zone && host,
            Rule::Zone => zone,
            Rule::Host => host,
            Rule::Any => true,
        }
    }
}

/// Bipartite matching (Kuhn) of replicas onto `per_master` seats per master.
fn assign(masters: &[Member], replicas: &[Member], per_master: usize, rule: Rule) -> Option<Vec<usize>> {
    // Seats round-major (master 0, 1, 2, 0, 1, 2, …) so replica i naturally lands on master i mod M.
    let seats: Vec<usize> = (0..per_master).flat_map(|_| 0..masters.len()).collect();
    let mut holder: Vec<Option<usize>> = vec![None; seats.len()];
    for r in 0..replicas.len() {
        let mut seen = vec![false; seats.len()];
        if !augment(r, masters, replicas, &seats, rule, &mut seen, &mut holder) {
            return None;
        }
    }
    let mut result = vec![0; replicas.len()];
    for (seat, r) in holder.iter().enumerate() {
        if let Some(r) = r {
            result[*r] = seats[seat];
        }
    }
    Some(result)
}

fn augment(
    r: usize,
    masters: &[Member],
    replicas: &[Member],
    seats: &[usize],
    rule: Rule,
    seen: &mut [bool],
    holder: &mut [Option<usize>],
) -> bool {
    // A free seat first, so replicas keep their natural order when nothing needs to move.
    if let Some(seat) =
        (0..seats.len()).find(|&s| !seen[s] && holder[s].is_none() && rule.allows(&replicas[r], &masters[seats[s]]))
    {
        seen[seat] = true;
        holder[seat] = Some(r);
        return true;
    }
    for seat in 0..seats.len() {
        if seen[seat] || !rule.allows(&replicas[r], &masters[seats[seat]]) {
            continue;
        }
        seen[seat] = true;
        let free = match holder[seat] {
            None => true,
            Some(other) => augment(other, masters, replicas, seats, rule, seen, holder),
        };
        if free {
            holder[seat] = Some(r);
            return true;
        }
    }
    false
}

/// A master and the slots it owns, input to move planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSlots {
    /// Node id.
    pub id: String,
    /// Owned slots, ascending.
    pub slots: Vec<u16>,
}

/// One slot to migrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The slot.
    pub slot: u16,
    /// Source master id.
    pub from: String,
    /// Destination master id.
    pub to: String,
}

/// Per-master slot targets for `total` slots: `total / M` each, and the `total % M` leftover
/// slots go to the masters that hold the most now (fewest moves), ties to the earlier master.
pub fn targets(counts: &[usize]) -> Vec<usize> {
    let m = counts.len();
    if m == 0 {
        return Vec::new();
    }
    let total: usize = counts.iter().sum();
    let (base, extra) = (total / m, total % m);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), i));
    let mut result = vec![base; m];
    for &i in order.iter().take(extra) {
        result[i] += 1;
    }
    result
}

/// Moves that leave every master with its [`targets`] count, or none when every master is within
/// `threshold_pct` percent of its target already.
///
/// Minimal: only surplus slots move (their number is the least any balancing needs), each donor
/// gives its highest slots so ranges stay contiguous.
pub fn rebalance_moves(masters: &[MasterSlots], threshold_pct: f64) -> Vec<Move> {
    let counts: Vec<usize> = masters.iter().map(|m| m.slots.len()).collect();
    let goal = targets(&counts);
    let off_by = |i: usize| {
        let (have, want) = (counts[i] as f64, goal[i] as f64);
        if want == 0.0 { if have == 0.0 { 0.0 } else { f64::INFINITY } } else { (have - want).abs() / want * 100.0 }
    };
    if (0..masters.len()).all(|i| off_by(i) <= threshold_pct) {
        return Vec::new();
    }
    let mut surplus: Vec<(usize, u16)> = Vec::new();
    for (i, m) in masters.iter().enumerate() {
        let give = counts[i].saturating_sub(goal[i]);
        let mut sorted = m.slots.clone();
        sorted.sort_unstable();
        surplus.extend(sorted[sorted.len() - give..].iter().map(|&s| (i, s)));
    }
    let mut needs: Vec<(usize, usize)> =
        (0..masters.len()).filter(|&i| goal[i] > counts[i]).map(|i| (i, goal[i] - counts[i])).collect();
    fill(masters, surplus, &mut needs)
}

/// Moves that empty master `leaving` onto the others, giving each receiver a contiguous chunk and
/// the emptiest receivers the most (water filling), so the rest ends as even as it can without
/// moving anything else.
pub fn drain_moves(masters: &[MasterSlots], leaving: &str) -> Vec<Move> {
    let Some(from) = masters.iter().position(|m| m.id == leaving) else {
        return Vec::new();
    };
    let others: Vec<usize> = (0..masters.len()).filter(|&i| i != from).collect();
    if others.is_empty() {
        return Vec::new();
    }
    let mut slots = masters[from].slots.clone();
    slots.sort_unstable();
    let mut counts: Vec<usize> = masters.iter().map(|m| m.slots.len()).collect();
    let mut gets = vec![0usize; masters.len()];
    for _ in &slots {
        // Fewest slots first; ties go to the earlier master.
        let Some(&to) = others.iter().min_by_key(|&&i| (counts[i], i)) else { break };
        counts[to] += 1;
        gets[to] += 1;
    }
    let mut needs: Vec<(usize, usize)> = others.iter().filter(|&&i| gets[i] > 0).map(|&i| (i, gets[i])).collect();
    fill(masters, slots.into_iter().map(|s| (from, s)).collect(), &mut needs)
}

/// Hands `surplus` slots out in order to `needs` (receiver index, count) in order.
fn fill(masters: &[MasterSlots], surplus: Vec<(usize, u16)>, needs: &mut [(usize, usize)]) -> Vec<Move> {
    let mut moves = Vec::with_capacity(surplus.len());
    let mut receiver = 0;
    for (from, slot) in surplus {
        while receiver < needs.len() && needs[receiver].1 == 0 {
            receiver += 1;
        }
        let Some((to, left)) = needs.get_mut(receiver) else { break };
        *left -= 1;
        moves.push(Move { slot, from: masters[from].id.clone(), to: masters[*to].id.clone() });
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(host: &str, zone: Option<&str>) -> Member {
        Member { host: host.to_owned(), zone: zone.map(str::to_owned) }
    }

    fn masters_with(counts: &[usize]) -> Vec<MasterSlots> {
        let mut next = 0u16;
        counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let slots: Vec<u16> = (next..next + n as u16).collect();
                next += n as u16;
                MasterSlots { id: format!("m{i}"), slots }
            })
            .collect()
    }

    fn after(masters: &[MasterSlots], moves: &[Move]) -> Vec<usize> {
        masters
            .iter()
            .map(|m| {
                let lost = moves.iter().filter(|mv| mv.from == m.id).count();
                let won = moves.iter().filter(|mv| mv.to == m.id).count();
                m.slots.len() - lost + won
            })
            .collect()
    }

    #[test]
    fn slots_split_evenly_and_contiguously_over_one_to_ten_masters() {
        for m in 1..=10 {
            let ranges = even_ranges(m);
            assert_eq!(ranges.len(), m);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[m - 1].1, SLOT_COUNT - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0, "gap or overlap for {m} masters");
            }
            let sizes: Vec<usize> = ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).collect();
            assert_eq!(sizes.iter().sum::<usize>(), usize::from(SLOT_COUNT));
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{m}: {sizes:?}");
        }
        assert_eq!(even_ranges(3), [(0, 5460), (5461, 10921), (10922, 16383)]);
    }

    #[test]
    fn replicas_land_in_another_zone_than_their_master() {
        let masters = [member("h", Some("a")), member("h", Some("b")), member("h", Some("c"))];
        let replicas = [member("h", Some("a")), member("h", Some("b")), member("h", Some("c"))];
        let plan = place_replicas(&masters, &replicas, 1).unwrap();
        for (r, &m) in plan.iter().enumerate() {
            assert_ne!(replicas[r].zone, masters[m].zone, "{plan:?}");
        }
        let mut used = plan.clone();
        used.sort_unstable();
        assert_eq!(used, [0, 1, 2], "one replica per master");

        // Two replicas per master over two zones: each master's replicas are all in the other zone.
        let masters = [member("h", Some("a")), member("h", Some("b"))];
        let replicas = [member("h", Some("a")), member("h", Some("a")), member("h", Some("b")), member("h", Some("b"))];
        let plan = place_replicas(&masters, &replicas, 2).unwrap();
        assert_eq!(plan, [1, 1, 0, 0]);
    }

    #[test]
    fn impossible_zone_layouts_are_refused() {
        let same = [member("h", Some("a")), member("h", Some("a"))];
        let err = place_replicas(&same[..1], &same[1..], 1).unwrap_err();
        assert!(matches!(err, PlanError::Zones { .. }), "{err}");
        // Masters a,b but both replicas in a: the one for master a has nowhere to go.
        let masters = [member("h", Some("a")), member("h", Some("b"))];
        let replicas = [member("h", Some("a")), member("h", Some("a"))];
        assert!(matches!(place_replicas(&masters, &replicas, 1), Err(PlanError::Zones { .. })));
        let partial = [member("h1", Some("a")), member("h2", None)];
        assert!(
            matches!(place_replicas(&partial[..1], &partial[1..], 1), Err(PlanError::PartialZones(h)) if h == "h2")
        );
        assert!(matches!(place_replicas(&masters, &replicas[..1], 1), Err(PlanError::Shape { nodes: 3, replicas: 1 })));
    }

    #[test]
    fn without_zones_replicas_prefer_another_host_else_any() {
        let masters = [member("h1", None), member("h2", None)];
        let replicas = [member("h1", None), member("h2", None)];
        assert_eq!(place_replicas(&masters, &replicas, 1).unwrap(), [1, 0]);
        let one_host = [member("h", None), member("h", None)];
        assert_eq!(place_replicas(&one_host, &one_host, 1).unwrap(), [0, 1]);
        // With zones, another host is preferred too: replica 0 could take master 0 (other zone,
        // same host) but goes elsewhere.
        let masters = [member("h1", Some("a")), member("h2", Some("b")), member("h3", Some("c"))];
        let replicas = [member("h1", Some("b")), member("h2", Some("c")), member("h3", Some("a"))];
        assert_eq!(place_replicas(&masters, &replicas, 1).unwrap(), [2, 0, 1]);
        // Same host is accepted when zones leave no other choice.
        let masters = [member("h1", Some("a")), member("h2", Some("b"))];
        let replicas = [member("h2", Some("a")), member("h1", Some("b"))];
        assert_eq!(place_replicas(&masters, &replicas, 1).unwrap(), [1, 0]);
    }

    #[test]
    fn rebalance_onto_a_new_master_moves_only_the_surplus() {
        let masters = masters_with(&[5462, 5461, 5461, 0]);
        let moves = rebalance_moves(&masters, 2.0);
        assert_eq!(moves.len(), 4096, "exactly what the new master needs");
        assert!(moves.iter().all(|m| m.to == "m3"));
        assert_eq!(after(&masters, &moves), [4096, 4096, 4096, 4096]);
        // Each donor gives its highest slots: one contiguous range per donor.
        let from_m0: Vec<u16> = moves.iter().filter(|m| m.from == "m0").map(|m| m.slot).collect();
        assert_eq!(from_m0, (4096..5462).collect::<Vec<_>>());
    }

    #[test]
    fn rebalance_respects_the_threshold_and_leftover_slots() {
        assert!(rebalance_moves(&masters_with(&[5462, 5461, 5461]), 0.0).is_empty(), "already even");
        assert!(rebalance_moves(&masters_with(&[5600, 5400, 5384]), 5.0).is_empty(), "within 5 %");
        let masters = masters_with(&[5600, 5400, 5384]);
        let moves = rebalance_moves(&masters, 1.0);
        assert_eq!(after(&masters, &moves), [5462, 5461, 5461]);
        assert_eq!(moves.len(), 5600 - 5462, "minimal");
        let masters = masters_with(&[16384, 0]);
        assert_eq!(after(&masters, &rebalance_moves(&masters, 2.0)), [8192, 8192]);
        assert!(rebalance_moves(&[], 2.0).is_empty());
        assert_eq!(targets(&[1, 5, 5]), [3, 4, 4], "leftovers stay where the slots are");
    }

    #[test]
    fn drain_empties_the_leaving_master_evenly_onto_the_rest() {
        let masters = masters_with(&[4096, 4096, 4096, 4096]);
        let moves = drain_moves(&masters, "m3");
        assert_eq!(moves.len(), 4096);
        assert_eq!(after(&masters, &moves), [5462, 5461, 5461, 0]);
        // Uneven start: the emptiest receives most.
        let masters = masters_with(&[6000, 5000, 5384 - 100, 100]);
        let moves = drain_moves(&masters, "m3");
        let counts = after(&masters, &moves);
        assert_eq!(counts[3], 0);
        assert_eq!(counts[0], 6000, "nothing goes to a master above the water line");
        assert!(drain_moves(&masters, "nope").is_empty());
    }
}
