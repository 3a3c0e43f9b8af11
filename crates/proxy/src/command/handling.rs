//! What the proxy does with each command: forward it by its keys, split it, fan it out, answer it
//! itself, keep it on a client's own connection, or refuse it with the reason why.

use super::CommandFlags;

/// How the proxy handles a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// Sent to the master owning the slot of its keys (all keys must share a slot, else the caller
    /// answers -CROSSSLOT); keyless commands go to any master.
    Forward,
    /// A script (EVAL, EVALSHA and `_RO` forms) or, with `function`, a function (FCALL, FCALL_RO):
    /// routed like `Forward`, run on a connection of its own (it may keep the node busy).
    Script { function: bool },
    /// Multi-key command split per slot and merged; `key_step` = 1 for MGET/DEL/EXISTS/UNLINK/
    /// TOUCH, 2 for MSET (key, value pairs).
    Split { merge: Merge, key_step: usize },
    /// Sent to every master, replies merged.
    FanOut(Merge),
    /// Answered by the proxy itself, by the module the kind names.
    Local(LocalKind),
    /// Needs per-client upstream state (transactions, pub/sub, blocking commands); the session
    /// handles them.
    Stateful(StatefulKind),
    /// Refused with this reason, e.g. "it would change the cluster topology behind the proxy".
    Refuse(&'static str),
    /// An operator command the session sends to nodes it names (CONFIG, SLOWLOG, LATENCY, MEMORY
    /// diagnostics), so that the merged reply can say which node answered what.
    Admin(AdminKind),
}

/// Which nodes an operator command goes to and how their replies come together; the session turns
/// it into a [`Merge`] carrying the nodes' addresses (`session/admin.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminKind {
    /// CONFIG GET: every master; per parameter the value most masters have ([`Merge::ConfigValues`]).
    ConfigGet,
    /// CONFIG SET / RESETSTAT / REWRITE: every node, replicas included, so a replica promoted later
    /// runs with the same settings; `+OK` only when every node said OK ([`Merge::AllOkNamed`]).
    EveryNode,
    /// SLOWLOG RESET: every master (the nodes SLOWLOG GET reads); `+OK` only when all said OK.
    EveryMasterOk,
    /// SLOWLOG GET: every master's entries, newest first, each tagged with its node.
    SlowlogGet,
    /// LATENCY LATEST / HISTORY / DOCTOR / GRAPH, MEMORY STATS / DOCTOR / MALLOC-STATS: every
    /// master's own reply, keyed by the master's address ([`Merge::KeyedByNode`]).
    PerMaster,
    /// LATENCY HISTOGRAM: every master's, added up as one node's ([`Merge::LatencyHistogram`]).
    LatencyHistogram,
    /// SCRIPT EXISTS: every master, and the scripts the proxy remembers ([`Merge::ScriptExists`]).
    ScriptExists,
}

/// How the replies of a split or fanned-out command become one reply (`crate::merge::merge`).
///
/// Unless a variant says otherwise, the first error reply in part order is the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// One array with the elements put back in the order of the request's keys (MGET).
    ArrayInKeyOrder,
    /// `+OK` when every part answered `+OK` (MSET, FLUSHALL, SCRIPT FLUSH, FUNCTION DELETE).
    AllOk,
    /// The sum of the parts' integers (DEL, EXISTS, DBSIZE, PUBSUB NUMPAT).
    SumIntegers,
    /// A transaction sent as MULTI, the queued commands and EXEC: EXEC's reply, whatever the
    /// others were (an EXECABORT when a queued command failed), with the replies of the
    /// connection commands the proxy ran itself at EXEC put in at their places in its array. Those
    /// are the last parts, one per place (ascending); EXEC's is the part before them.
    Exec { local_places: Vec<u32> },
    /// The reply every part gave, which must be the same everywhere (SCRIPT LOAD's SHA1, FUNCTION
    /// LOAD's library name); `-ERR nodes disagree: …` when it is not.
    SameReply,
    /// SCRIPT EXISTS: arrays of 0/1, one per master, combined element-wise. A script exists when
    /// EVALSHA of it works through the proxy on any key: every master has it, or one has it
    /// (it compiled) and the proxy remembers its body (`remembered[i]`), which it loads where an
    /// EVALSHA meets `-NOSCRIPT` (`executor/scripts.rs`).
    ScriptExists { remembered: Vec<bool> },
    /// The first part that is not an error, else the first error, one other than `NOTBUSY` first:
    /// SCRIPT KILL and FUNCTION KILL (only the master running the script can kill it, the others
    /// answer `NOTBUSY`), SCRIPT SHOW (only a master that ran or loaded the script knows it).
    AnyOk,
    /// FUNCTION STATS: the reply of the master running a function (its `running_script` is not
    /// null), else the first master's; Redis' reply shape as the node sent it.
    FunctionStats,
    /// Every part's array flattened into one, in part order (KEYS).
    ConcatArrays,
    /// RANDOMKEY across the cluster: the parts are every master's `DBSIZE`, then every master's
    /// `RANDOMKEY` in the same order; one key is picked with each master weighted by its key
    /// count, from `seed` (the merge stays a pure function).
    RandomKey { seed: u64 },
    /// Every part's array merged without duplicates, in order of first appearance (PUBSUB
    /// CHANNELS, PUBSUB SHARDCHANNELS).
    UnionArrays,
    /// `[name, count, …]` arrays, or RESP3 maps where a node answers with one, with the same names
    /// in the same order everywhere: the counts summed per name, the form kept (PUBSUB NUMSUB,
    /// PUBSUB SHARDNUMSUB).
    SumPairs,
    /// The one reply of `SCAN <node cursor> …` sent to master number `master` of `masters`, with
    /// its cursor rewritten into the proxy's cursor for the client (`crate::merge::split_scan_cursor`
    /// documents the encoding). Keys are copied as received.
    ScanCursor { master: usize, masters: usize },
    /// `INFO` sections about the data (keyspace, stats, memory, persistence, commandstats …) of every
    /// master as one reply: numbers summed, `avg_ttl` weighted by expires (see `merge/info.rs`);
    /// the fields in `own` have the proxy's value instead of the masters' (its tracking table).
    InfoSums { own: Vec<(&'static str, u64)> },
    /// CONFIG GET from every master (`nodes[i]` answered part `i`): the first master's reply with,
    /// per parameter, the value most masters have (a tie goes to the earliest master); parameters
    /// the masters disagree on are logged as a warning (`crate::merge` documents the rule). The
    /// settings the proxy keeps for its own clients have the proxy's value ([`OwnConfig`]).
    ConfigValues { nodes: Vec<String>, own: OwnConfig },
    /// `+OK` when every node answered `+OK`; else `-ERR <command> failed on <node> (<its reply>)`
    /// naming every node that did not, with how many said OK. Errors are not passed through: they
    /// are what this merge reports (CONFIG SET, SLOWLOG RESET).
    AllOkNamed { command: String, nodes: Vec<String> },
    /// SLOWLOG GET from every master: all entries, newest first by timestamp (ties keep master
    /// order), at most `count`, each with `node=<address>` in its client-name field.
    Slowlog { nodes: Vec<String>, count: usize },
    /// Each master's reply as is, keyed by its address: a RESP3 map, or a RESP2 flat array
    /// `[address, reply, …]` (LATENCY, MEMORY STATS).
    KeyedByNode { nodes: Vec<String>, protocol: crate::resp::reply::Protocol },
    /// LATENCY HISTOGRAM from every master as one node's reply, in the client's `protocol`: per
    /// command, calls summed and cumulative distributions added up (see `merge/latency.rs`).
    LatencyHistogram { protocol: crate::resp::reply::Protocol },
}

/// What `CONFIG GET` answers from the proxy rather than from the nodes: the settings the proxy
/// keeps for its own clients, whose values the nodes do not know (its config file may set them),
/// by name (`session/settings.rs` lists them).
pub type OwnConfig = Vec<(&'static [u8], OwnValue)>;

/// The proxy's value of a setting it keeps for its own clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnValue {
    /// The whole value (`maxclients`, `timeout`, `tracking-table-max-keys`).
    Whole(String),
    /// The groups of these classes in `client-output-buffer-limit`; the others (replicas) are the
    /// nodes'.
    Classes([(crate::output_classes::Class, crate::output_classes::Limits); 2]),
}

/// Which part of the proxy answers a local command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// From the client's own connection state: HELLO, AUTH, CLIENT SETNAME, INFO, COMMAND …
    /// (`session/local.rs`).
    Connection,
    /// PING and ECHO: answered like `Connection`, and they mean the same on a node, so a
    /// transaction may queue them.
    Echo,
    /// The proxy's clients: CLIENT LIST, INFO, KILL, PAUSE, UNBLOCK (`session/clients.rs`).
    Clients,
    /// CLIENT UNPAUSE: like `Clients`, and it gets through a `CLIENT PAUSE` itself.
    Unpause,
    /// CLIENT TRACKING, CACHING, GETREDIR, TRACKINGINFO: client-side caching
    /// (`session/tracking.rs`).
    Tracking,
    /// SCAN: a cluster-wide cursor walking the masters one after the other.
    Scan,
    /// RANDOMKEY: one key from the masters, each weighted by its key count.
    RandomKey,
}

/// Which per-client upstream state a stateful command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatefulKind {
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: on the client's own connection.
    Transaction(TransactionStep),
    /// Subscriptions: on the client's subscription connections.
    PubSub,
    /// Commands that may block (BLPOP, XREAD with BLOCK, a module's blocking command): on an own
    /// connection, so that a blocked client holds up no other.
    Blocking,
    /// WAIT and WAITAOF: they block, but count the acknowledgements of the client's writes, so
    /// they go to the pooled connection those went through.
    WaitReplicas,
}

/// Which step of a transaction a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStep {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

impl Handling {
    /// The transaction step of a MULTI, EXEC, DISCARD, WATCH or UNWATCH.
    pub fn transaction_step(&self) -> Option<TransactionStep> {
        match self {
            Handling::Stateful(StatefulKind::Transaction(step)) => Some(*step),
            _ => None,
        }
    }
}

// Every refusal says why the proxy will not run the command and, where there is one, what to do
// instead: the client sees `-ERR unsupported command 'X' in proxy: <reason>`.
pub(super) const TOPOLOGY: &str = "it would change the cluster topology behind the proxy; \
    use redisforge-ops cluster (create, add, remove, rebalance) or run it on the node concerned";
const FAILOVER: &str = "a failover is started on the replica that takes over, \
    and the proxy cannot tell which node that should be; run CLUSTER FAILOVER on that replica";
const REPLICA_OF: &str = "it would change one node's replication behind the cluster's back; \
    attach replicas with redisforge-ops cluster add --replica-of";
const NODE_LOCAL: &str = "it addresses a single cluster node; connect to that node directly";
const REPLICATION: &str = "it opens a replication stream, which only a node can serve; \
    replicas connect to their master directly";
const MONITORING: &str = "MONITOR streams one node's commands on a connection of its own, \
    and the proxy's connections are shared; run MONITOR on a node directly";
const SHUTDOWN: &str = "it would stop one cluster node, not the cluster; \
    stop nodes through their service manager (the proxy itself stops on SIGTERM)";
const DEBUG: &str = "it can block, crash or corrupt the node it reaches (DEBUG SLEEP, SEGFAULT, RELOAD), \
    which every client of the proxy shares; run it on a node directly";
const PERSISTENCE: &str = "it would save one node only; \
    redisforge-ops backup runs BGSAVE on every master and collects the files with a manifest";
const MODULE: &str = "modules are loaded on every node alike at start-up (loadmodule in redis.conf), \
    and the proxy learns their commands from COMMAND then";
const ACL: &str = "ACL users are managed per node and in the proxy configuration, not through the proxy";
const SINGLE_DB: &str = "Redis Cluster has only database 0";
pub(super) const UNKNOWN_ADMIN: &str = "it is an admin command the proxy does not know, \
    so it cannot tell which nodes should run it";
const ASKING: &str = "the proxy follows ASK redirections itself; ASKING would flag a connection other clients share";
const IMPORT_SOURCE: &str = "it marks the connection it is sent on as an import source, \
    and the proxy's connections are shared; run it on a node directly";
const SCRIPT_DEBUG: &str = "the Lua debugger needs a connection of its own, and the proxy's are shared";

/// The proxy's decision for a command, by name; everything not listed is forwarded by its keys.
/// `learned` marks commands that came from a node rather than the built-in table: unknown admin
/// commands are refused because the proxy cannot tell whether they are safe to send to one node.
///
/// Longer than ~80 lines on purpose: it is the one table of the proxy's decisions, read as a table
/// (one arm per decision, its reason beside it); splitting it would scatter what a reviewer needs
/// to see at once.
pub(super) fn handling_for(name: &str, flags: CommandFlags, learned: bool) -> Handling {
    use Handling::*;
    use Merge::*;
    use StatefulKind::*;
    match name {
        "mget" => Split { merge: ArrayInKeyOrder, key_step: 1 },
        "mset" => Split { merge: AllOk, key_step: 2 },
        "del" | "unlink" | "exists" | "touch" => Split { merge: SumIntegers, key_step: 1 },
        // Every master holds a part of the keyspace, its own scripts, functions and subscribers: a
        // node answers for itself only, the proxy for the cluster.
        "dbsize" => FanOut(SumIntegers),
        "flushall" | "flushdb" | "script|flush" | "function|delete" | "function|flush" | "function|restore" => {
            FanOut(AllOk)
        }
        // EVALSHA and FCALL may go to any master, so scripts and functions are loaded on all.
        "script|load" | "function|load" => FanOut(SameReply),
        "script|exists" => Admin(AdminKind::ScriptExists),
        "script|kill" | "function|kill" => FanOut(AnyOk),
        // A function runs on one master: the one FUNCTION KILL stops says what runs.
        "function|stats" => FanOut(FunctionStats),
        // A script EVAL cached is known only to the master that ran it (Valkey 8's SCRIPT SHOW).
        "script|show" => FanOut(AnyOk),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => Script { function: false },
        "fcall" | "fcall_ro" => Script { function: true },
        "keys" => FanOut(ConcatArrays),
        // Asks every master for its key count and a key, then picks one weighted by the counts.
        "randomkey" => Local(LocalKind::RandomKey),
        // Classic subscriptions made through any RedisForge all live on one master, the pub/sub
        // home (router::PUBSUB_HOME_SLOT), where PUBLISH and these go too: its counts are exact.
        "pubsub|shardchannels" => FanOut(UnionArrays),
        "pubsub|shardnumsub" => FanOut(SumPairs),
        // A cluster-wide cursor walks the masters one after the other (see merge::split_scan_cursor).
        "scan" => Local(LocalKind::Scan),
        "ping" | "echo" => Local(LocalKind::Echo),
        "quit" | "select" | "hello" | "auth" | "reset" | "readonly" | "readwrite" | "info" | "acl|whoami"
        | "client|setname" | "client|getname" | "client|id" | "client|setinfo" | "client|no-evict"
        | "client|no-touch" | "client|reply" | "client|capa" => Local(LocalKind::Connection),
        // A node's client list would show the proxy's pooled connections: these act on the
        // proxy's own clients instead (session/clients.rs).
        "client|info" | "client|list" | "client|kill" | "client|pause" | "client|unblock" => Local(LocalKind::Clients),
        "client|unpause" => Local(LocalKind::Unpause),
        "multi" => Stateful(Transaction(TransactionStep::Multi)),
        "exec" => Stateful(Transaction(TransactionStep::Exec)),
        "discard" => Stateful(Transaction(TransactionStep::Discard)),
        "watch" => Stateful(Transaction(TransactionStep::Watch)),
        "unwatch" => Stateful(Transaction(TransactionStep::Unwatch)),
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ssubscribe" | "sunsubscribe" => Stateful(PubSub),
        // XREAD is blocking only with BLOCK; the session checks, the table cannot.
        "wait" | "waitaof" => Stateful(WaitReplicas),
        "xread" | "xreadgroup" => Stateful(Blocking),
        "monitor" => Refuse(MONITORING),
        "sync" | "psync" | "replconf" => Refuse(REPLICATION),
        "replicaof" | "slaveof" => Refuse(REPLICA_OF),
        "failover" | "cluster|failover" => Refuse(FAILOVER),
        "shutdown" => Refuse(SHUTDOWN),
        "debug" => Refuse(DEBUG),
        "save" | "bgsave" | "bgrewriteaof" => Refuse(PERSISTENCE),
        // Operator commands (issue #10). Settings go to every node, replicas included, so that a
        // replica promoted later runs with them too; diagnostics come from every master, each one
        // named, since a node's slow log or latency samples only describe that node.
        "config|get" => Admin(AdminKind::ConfigGet),
        "config|set" | "config|resetstat" | "config|rewrite" => Admin(AdminKind::EveryNode),
        // Valkey 8's COMMANDLOG keeps SLOWLOG's entries for slow, large-request and large-reply
        // commands: the same merges, the count at the same place (`COMMANDLOG GET <count> <type>`).
        "slowlog|get" | "commandlog|get" => Admin(AdminKind::SlowlogGet),
        "slowlog|reset" | "commandlog|reset" => Admin(AdminKind::EveryMasterOk),
        "slowlog|len" | "commandlog|len" | "latency|reset" => FanOut(SumIntegers),
        "latency|latest"
        | "latency|history"
        | "latency|doctor"
        | "latency|graph"
        | "memory|stats"
        | "memory|doctor"
        | "memory|malloc-stats" => Admin(AdminKind::PerMaster),
        "latency|histogram" => Admin(AdminKind::LatencyHistogram),
        "memory|purge" => FanOut(AllOk),
        "swapdb" | "move" => Refuse(SINGLE_DB),
        // Both set state on the node's connection that would apply to whichever client's request
        // comes next on it: ASKING lets one command into an importing slot, SCRIPT DEBUG turns the
        // next EVAL into a debugging session (SYNC mode even blocks the node).
        "asking" => Refuse(ASKING),
        "script|debug" => Refuse(SCRIPT_DEBUG),
        "client|import-source" => Refuse(IMPORT_SOURCE),
        "client|tracking" | "client|caching" | "client|getredir" | "client|trackinginfo" => Local(LocalKind::Tracking),
        "cluster|info"
        | "cluster|keyslot"
        | "cluster|slots"
        | "cluster|shards"
        | "cluster|nodes"
        | "cluster|myid"
        | "cluster|countkeysinslot" => Forward,
        "cluster|addslots"
        | "cluster|addslotsrange"
        | "cluster|delslots"
        | "cluster|delslotsrange"
        | "cluster|flushslots"
        | "cluster|setslot"
        | "cluster|meet"
        | "cluster|forget"
        | "cluster|reset"
        | "cluster|replicate"
        | "cluster|set-config-epoch"
        | "cluster|bumpepoch" => Refuse(TOPOLOGY),
        _ => match name.split_once('|').map_or(name, |(container, _)| container) {
            "command" => Local(LocalKind::Connection),
            "cluster" => Refuse(NODE_LOCAL),
            "acl" => Refuse(ACL),
            "module" => Refuse(MODULE),
            _ if flags.contains(CommandFlags::BLOCKING) => Stateful(Blocking),
            _ if learned && flags.contains(CommandFlags::ADMIN) => Refuse(UNKNOWN_ADMIN),
            _ => Forward,
        },
    }
}

/// Commands Redis flags `may_replicate` without reporting it: `COMMAND` hides that flag on
/// purpose (server.c's `addReplyCommandFlags`), so neither the generated table nor a node's reply
/// carries it. Redis 7.0.15's commands.c; `CLIENT PAUSE WRITE` holds them as it holds writes.
const HIDDEN_MAY_REPLICATE: [&str; 6] = ["pfcount", "publish", "spublish", "eval", "evalsha", "fcall"];

/// The flags Redis gives command `name` beyond those `COMMAND` reports.
pub(super) fn hidden_flags(name: &str) -> CommandFlags {
    match HIDDEN_MAY_REPLICATE.contains(&name) {
        true => CommandFlags::MAY_REPLICATE,
        false => CommandFlags::empty(),
    }
}
