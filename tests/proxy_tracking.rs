//! Client-side caching through the proxy (CLIENT TRACKING): invalidations from every master, in
//! Redis' shapes, for RESP3 pushes, RESP2 redirection, BCAST prefixes, OPTIN/OPTOUT; a bounded
//! table; flushes when the proxy cannot be sure (a tracking stream lost, a failover); nothing
//! left behind by a client that leaves. The redis-py cache itself runs in `client_redis_py.rs`.

use std::time::{Duration, Instant};

use redisforge_tests::resp::{Conn, Frame};
use redisforge_tests::{Cluster, ClusterOptions, Proxy, ProxyOptions, wait_until};

fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// A connection to the proxy, RESP3 when asked.
fn open(proxy: &Proxy, resp3: bool) -> Conn {
    let mut conn = Conn::open(&proxy.addr());
    if resp3 {
        let (_, hello) = conn.call(&args(&["HELLO", "3"])).expect("HELLO 3");
        assert!(!hello.is_error(), "{hello:?}");
    }
    conn
}

/// Sends a command and returns its reply, after any push frames (which are collected).
fn call(conn: &mut Conn, list: &[&str], pushes: &mut Vec<String>) -> String {
    conn.send(&args(list)).expect("send");
    loop {
        let (bytes, frame) = conn.read().expect("reply");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match frame {
            Frame::Aggregate(b'>', _) => pushes.push(text),
            _ => return text,
        }
    }
}

/// Calls and expects no push before the reply.
fn call_quiet(conn: &mut Conn, list: &[&str]) -> String {
    let mut pushes = Vec::new();
    let reply = call(conn, list, &mut pushes);
    assert!(pushes.is_empty(), "unexpected messages before the reply of {list:?}: {pushes:?}");
    reply
}

/// Every frame that arrives within `quiet` of the last one (at most `limit` in all).
fn drain(conn: &mut Conn, quiet: Duration, limit: usize) -> Vec<String> {
    let mut frames = Vec::new();
    while frames.len() < limit {
        match conn.read_within(quiet).expect("read") {
            Some((bytes, _)) => frames.push(String::from_utf8_lossy(&bytes).into_owned()),
            None => break,
        }
    }
    frames
}

/// Waits for `count` frames (at most 10 s).
fn expect_frames(conn: &mut Conn, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frames = Vec::new();
    while frames.len() < count && Instant::now() < deadline {
        if let Some((bytes, _)) = conn.read_within(Duration::from_millis(200)).expect("read") {
            frames.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    assert_eq!(frames.len(), count, "expected {count} frames, got {frames:?}");
    frames
}

fn push_for(key: &str) -> String {
    format!(">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n", key.len())
}

const FLUSH_PUSH: &str = ">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// Waits until the proxy's tracking stream to every master of `cluster` is confirmed.
fn wait_streams(proxy: &Proxy, cluster: &Cluster) {
    let masters = cluster.masters();
    let up = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        masters.iter().all(|m| proxy.metric(&format!("redisforge_tracking_stream_up{{node=\"{m}\"}}")) == Some(1.0))
    });
    assert!(up, "tracking streams not up for {masters:?}:\n{}", proxy.log_tail(30));
}

/// A RESP3 client with tracking on (default mode), once every stream is up.
fn tracker(proxy: &Proxy, cluster: &Cluster, options: &[&str]) -> Conn {
    let mut conn = open(proxy, true);
    let mut command = vec!["CLIENT", "TRACKING", "on"];
    command.extend_from_slice(options);
    assert_eq!(call_quiet(&mut conn, &command), "+OK\r\n");
    wait_streams(proxy, cluster);
    conn
}

fn set(writer: &mut redis::Connection, key: &str, value: &str) {
    let _: () = redis::cmd("SET").arg(key).arg(value).query(writer).expect("SET");
}

#[test]
fn reads_on_every_master_are_invalidated_by_any_write_once() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, cluster, &[]);
    let mut writer = proxy.client();
    let keys = cluster.key_per_master("trk-every");
    for key in &keys {
        set(&mut writer, key, "v1");
        assert_eq!(call_quiet(&mut reader, &["GET", key]), "$2\r\nv1\r\n");
    }
    for key in &keys {
        set(&mut writer, key, "v2");
    }
    let mut got = expect_frames(&mut reader, keys.len());
    got.sort();
    let mut want: Vec<String> = keys.iter().map(|k| push_for(k)).collect();
    want.sort();
    assert_eq!(got, want, "one invalidation per key, from each key's master");
    // The entries were consumed: a second write without a new read says nothing.
    set(&mut writer, &keys[0], "v3");
    assert_eq!(drain(&mut reader, Duration::from_millis(400), 5), Vec::<String>::new());
    // A write made on the node itself, bypassing the proxy, is seen too.
    assert_eq!(call_quiet(&mut reader, &["GET", &keys[1]]), "$2\r\nv2\r\n");
    let mut direct = cluster.client(&cluster.node_for_key(&keys[1]));
    let _: () = redis::cmd("SET").arg(&keys[1]).arg("direct").query(&mut direct).expect("SET on the node");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for(&keys[1])]);
    // MGET over every master: one message per key, as Redis sends them.
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert!(call_quiet(&mut reader, &mget).starts_with("*3\r\n"));
    let deleted: i64 = redis::cmd("DEL").arg(&keys).query(&mut writer).expect("DEL");
    assert_eq!(deleted, keys.len() as i64);
    assert_eq!(expect_frames(&mut reader, keys.len()).len(), keys.len());
}

#[test]
fn resp2_clients_get_invalidations_through_a_subscribed_redirect_target() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut target = open(&proxy, false);
    let id = call_quiet(&mut target, &["CLIENT", "ID"]).trim_start_matches(':').trim_end().to_string();
    let subscribed = call_quiet(&mut target, &["SUBSCRIBE", "__redis__:invalidate"]);
    assert!(subscribed.contains("__redis__:invalidate"), "{subscribed}");
    let mut reader = open(&proxy, false);
    assert_eq!(call_quiet(&mut reader, &["CLIENT", "TRACKING", "on", "REDIRECT", &id]), "+OK\r\n");
    assert_eq!(call_quiet(&mut reader, &["CLIENT", "GETREDIR"]), format!(":{id}\r\n"));
    wait_streams(&proxy, cluster);
    let mut writer = proxy.client();
    let key = "trk-redirect:{r2}";
    set(&mut writer, key, "a");
    assert_eq!(call_quiet(&mut reader, &["GET", key]), "$1\r\na\r\n");
    set(&mut writer, key, "b");
    let message = expect_frames(&mut target, 1);
    let want = format!("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n${}\r\n{key}\r\n", key.len());
    assert_eq!(message, vec![want]);
    // CLIENT LIST shows the tracking flag and the redirect.
    let list = call_quiet(&mut reader, &["CLIENT", "INFO"]);
    assert!(list.contains("flags=t ") && list.contains(&format!("redir={id} ")), "{list}");
}

#[test]
fn a_redirect_to_a_client_that_left_is_reported_as_broken() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut target = open(&proxy, true);
    let id = call_quiet(&mut target, &["CLIENT", "ID"]).trim_start_matches(':').trim_end().to_string();
    let mut reader = tracker(&proxy, cluster, &["REDIRECT", &id]);
    let key = "trk-broken:{b}";
    let mut writer = proxy.client();
    set(&mut writer, key, "a");
    call_quiet(&mut reader, &["GET", key]);
    drop(target);
    std::thread::sleep(Duration::from_millis(200));
    set(&mut writer, key, "b");
    let want = format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{id}\r\n");
    assert_eq!(expect_frames(&mut reader, 1), vec![want]);
    let info = call_quiet(&mut reader, &["CLIENT", "TRACKINGINFO"]);
    assert!(info.contains("$2\r\non\r\n$15\r\nbroken_redirect\r\n"), "{info}");
    assert!(info.contains(&format!("$8\r\nredirect\r\n:{id}\r\n")), "{info}");
}

#[test]
fn bcast_clients_hear_of_every_key_with_their_prefixes_on_every_master() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, cluster, &["BCAST", "PREFIX", "trk-bc:", "PREFIX", "trk-bd:"]);
    let info = call_quiet(&mut reader, &["CLIENT", "TRACKINGINFO"]);
    assert!(info.contains("*2\r\n$7\r\ntrk-bc:\r\n$7\r\ntrk-bd:\r\n"), "{info}");
    let mut writer = proxy.client();
    let keys = cluster.key_per_master("trk-bc:");
    for key in &keys {
        set(&mut writer, key, "x");
        set(&mut writer, &format!("trk-other:{key}"), "x");
    }
    let got = expect_frames(&mut reader, keys.len());
    for key in &keys {
        assert!(got.contains(&push_for(key)), "{key} missing from {got:?}");
    }
    // One message per prefix for a transaction's keys (written in one event loop).
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("trk-bc:{t}1")
        .arg(1)
        .cmd("SET")
        .arg("trk-bc:{t}2")
        .arg(2)
        .cmd("SET")
        .arg("trk-bd:{t}1")
        .arg(3)
        .cmd("SET")
        .arg("trk-be:{t}1")
        .arg(4)
        .query(&mut writer)
        .expect("MULTI");
    let mut got = expect_frames(&mut reader, 2);
    got.sort();
    let two = ">2\r\n$10\r\ninvalidate\r\n*2\r\n$11\r\ntrk-bc:{t}1\r\n$11\r\ntrk-bc:{t}2\r\n";
    let one = ">2\r\n$10\r\ninvalidate\r\n*1\r\n$11\r\ntrk-bd:{t}1\r\n";
    let mut want = vec![two.to_string(), one.to_string()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(drain(&mut reader, Duration::from_millis(300), 5), Vec::<String>::new());
}

#[test]
fn optin_optout_and_noloop_decide_what_is_tracked() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut writer = proxy.client();
    for key in ["trk-o:1", "trk-o:2", "trk-o:3", "trk-o:4", "trk-o:5"] {
        set(&mut writer, key, "v");
    }
    let mut optin = tracker(&proxy, cluster, &["OPTIN"]);
    call_quiet(&mut optin, &["GET", "trk-o:1"]);
    assert_eq!(call_quiet(&mut optin, &["CLIENT", "CACHING", "yes"]), "+OK\r\n");
    // CLIENT commands leave the flag for the next command (Redis' rule).
    call_quiet(&mut optin, &["CLIENT", "GETNAME"]);
    call_quiet(&mut optin, &["GET", "trk-o:2"]);
    call_quiet(&mut optin, &["GET", "trk-o:3"]);
    for key in ["trk-o:1", "trk-o:2", "trk-o:3"] {
        set(&mut writer, key, "w");
    }
    assert_eq!(expect_frames(&mut optin, 1), vec![push_for("trk-o:2")]);
    assert_eq!(drain(&mut optin, Duration::from_millis(300), 5), Vec::<String>::new());

    let mut optout = tracker(&proxy, cluster, &["OPTOUT"]);
    assert_eq!(call_quiet(&mut optout, &["CLIENT", "CACHING", "no"]), "+OK\r\n");
    let info = call_quiet(&mut optout, &["CLIENT", "TRACKINGINFO"]);
    assert!(info.contains("$6\r\noptout\r\n$10\r\ncaching-no\r\n"), "{info}");
    call_quiet(&mut optout, &["GET", "trk-o:4"]);
    call_quiet(&mut optout, &["GET", "trk-o:5"]);
    set(&mut writer, "trk-o:4", "w");
    set(&mut writer, "trk-o:5", "w");
    assert_eq!(expect_frames(&mut optout, 1), vec![push_for("trk-o:5")]);
    let refused = call_quiet(&mut optout, &["CLIENT", "CACHING", "yes"]);
    assert_eq!(refused, "-ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.\r\n");

    // NOLOOP is accepted and shown; the client still hears of its own writes (see the README:
    // the proxy cannot tell its own change from another client's at the same moment).
    let mut noloop = tracker(&proxy, cluster, &["NOLOOP"]);
    let info = call_quiet(&mut noloop, &["CLIENT", "TRACKINGINFO"]);
    assert!(info.contains("$2\r\non\r\n$6\r\nnoloop\r\n"), "{info}");
    call_quiet(&mut noloop, &["GET", "trk-o:1"]);
    set(&mut writer, "trk-o:1", "other");
    assert_eq!(expect_frames(&mut noloop, 1), vec![push_for("trk-o:1")]);
}

#[test]
fn invalidations_follow_the_replies_of_reads_in_flight_and_never_land_inside_exec() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, cluster, &[]);
    let mut writer = proxy.client();
    set(&mut writer, "trk-tx:{x}", "1");
    call_quiet(&mut reader, &["MULTI"]);
    call_quiet(&mut reader, &["GET", "trk-tx:{x}"]);
    let exec = call_quiet(&mut reader, &["EXEC"]);
    assert_eq!(exec, "*1\r\n$1\r\n1\r\n");
    set(&mut writer, "trk-tx:{x}", "2");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for("trk-tx:{x}")]);
    // A pipeline of reads while another client writes, read as a client cache would: a reply
    // caches the value, a message drops it. Every message comes after the replies of the reads
    // sent before it arrived, so once all is quiet a value still cached is the current one.
    let key = "trk-pipe:{p}";
    set(&mut writer, key, "start");
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend(redisforge_tests::resp::encode(&args(&["GET", key])));
    }
    let proxy_addr = proxy.addr();
    let writes = std::thread::spawn(move || {
        let mut writer = redisforge_tests::connect(&proxy_addr).expect("connect");
        for i in 0..300 {
            let _: () = redis::cmd("SET").arg(key).arg(i).query(&mut writer).expect("SET");
        }
    });
    for _ in 0..5 {
        reader.send_raw(&batch).expect("pipeline");
    }
    let (mut replies, mut messages, mut cached) = (0, 0, None::<Vec<u8>>);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match reader.read_within(Duration::from_millis(700)).expect("read") {
            Some((_, Frame::Aggregate(b'>', _))) => {
                messages += 1;
                cached = None;
            }
            Some((_, Frame::Blob(b'$', value))) => {
                replies += 1;
                cached = value;
            }
            Some((bytes, _)) => panic!("unexpected {}", String::from_utf8_lossy(&bytes)),
            None if replies == 1000 && writes.is_finished() => break,
            None => {}
        }
    }
    writes.join().expect("writer");
    assert_eq!(replies, 1000);
    assert!(messages > 0, "the writes were heard");
    let current: Vec<u8> = redis::cmd("GET").arg(key).query(&mut writer).expect("GET");
    if let Some(value) = cached {
        assert_eq!(String::from_utf8_lossy(&value), String::from_utf8_lossy(&current), "a stale value stayed cached");
    }
}

#[test]
fn a_client_that_leaves_leaves_nothing_behind() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, cluster, &[]);
    let mut writer = proxy.client();
    for i in 0..100 {
        let key = format!("trk-leave:{i}");
        set(&mut writer, &key, "v");
        call_quiet(&mut reader, &["GET", &key]);
    }
    assert_eq!(proxy.metric("redisforge_tracking_keys"), Some(100.0));
    assert_eq!(proxy.metric("redisforge_tracking_clients"), Some(1.0));
    let info = call_quiet(&mut reader, &["INFO", "clients"]);
    assert!(info.contains("tracking_clients:1\r\n"), "{info}");
    drop(reader);
    let gone = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        proxy.metric("redisforge_tracking_keys") == Some(0.0)
            && proxy.metric("redisforge_tracking_clients") == Some(0.0)
    });
    assert!(gone, "keys {:?}", proxy.metric("redisforge_tracking_keys"));
    let mut other = open(&proxy, false);
    let info = call_quiet(&mut other, &["INFO", "clients"]);
    assert!(info.contains("tracking_clients:0\r\n"), "{info}");
    // A client that never tracks shows no tracking in CLIENT INFO.
    let info = call_quiet(&mut other, &["CLIENT", "INFO"]);
    assert!(info.contains(" flags=N ") && info.contains(" redir=-1 "), "{info}");
}

#[test]
fn the_table_stays_within_its_limit_and_evicted_keys_are_invalidated() {
    let cluster = Cluster::shared();
    let opts = ProxyOptions { extra_toml: "[tracking]\nmax_keys = 1000\n".into(), ..ProxyOptions::default() };
    let proxy = Proxy::start(cluster, opts);
    // CONFIG GET answers the proxy's bound, the one its clients' reads are under.
    let shown: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("tracking-table-max-keys").query(&mut proxy.client()).expect("CONFIG GET");
    assert_eq!(shown, ["tracking-table-max-keys", "1000"]);
    let mut reader = tracker(&proxy, cluster, &[]);
    let total = 10_000;
    let (mut replies, mut pushes) = (0, 0);
    // Batches of 500 reads, each read back before the next is sent, as a client would.
    for start in (0..total).step_by(500) {
        let mut batch = Vec::new();
        for i in start..start + 500 {
            batch.extend(redisforge_tests::resp::encode(&args(&["GET", &format!("trk-limit:{i}")])));
        }
        reader.send_raw(&batch).expect("pipeline");
        let deadline = Instant::now() + Duration::from_secs(20);
        while replies < start + 500 && Instant::now() < deadline {
            match reader.read_within(Duration::from_secs(2)).expect("read") {
                Some((bytes, Frame::Aggregate(b'>', _))) => {
                    assert!(String::from_utf8_lossy(&bytes).contains("trk-limit:"), "a key's message");
                    pushes += 1;
                }
                Some(_) => replies += 1,
                None => break,
            }
        }
    }
    pushes += drain(&mut reader, Duration::from_millis(500), total).len();
    assert_eq!((replies, pushes), (total, total - 1000), "every read answered, every evicted key invalidated");
    assert_eq!(proxy.metric("redisforge_tracking_keys"), Some(1000.0));
    assert_eq!(proxy.metric("redisforge_tracking_evictions_total"), Some(9000.0));
}

/// `CONFIG SET tracking-table-max-keys` bounds the proxy's table too, the one its clients' reads
/// are in: keys beyond the new bound are invalidated at once (Redis within a second), also when
/// the CONFIG SET ran in a transaction. INFO stats counts that table, as a node counts its own.
#[test]
fn config_set_tracking_table_max_keys_bounds_the_proxys_table_and_info_counts_it() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, cluster, &[]);
    for i in 0..3 {
        assert_eq!(call_quiet(&mut reader, &["GET", &format!("trk-config:{i}")]), "_\r\n");
    }
    let mut admin = proxy.client();
    let stat = |admin: &mut redis::Connection, name: &str| -> String {
        let text: String = redis::cmd("INFO").arg("stats").query(admin).expect("INFO stats");
        text.lines().find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.to_owned())).expect(name)
    };
    assert_eq!(
        (stat(&mut admin, "tracking_total_keys"), stat(&mut admin, "tracking_total_items")),
        ("3".into(), "3".into())
    );
    // Prefixes count once however many BCAST clients asked for them.
    let mut bcast = [open(&proxy, true), open(&proxy, true)];
    for (conn, prefixes) in bcast.iter_mut().zip([&["PREFIX", "a:", "PREFIX", "b:"][..], &["PREFIX", "a:"]]) {
        let command: Vec<&str> =
            ["CLIENT", "TRACKING", "on", "BCAST"].into_iter().chain(prefixes.iter().copied()).collect();
        assert_eq!(call_quiet(conn, &command), "+OK\r\n");
    }
    assert_eq!(stat(&mut admin, "tracking_total_prefixes"), "2");
    let set_max = |admin: &mut redis::Connection, max: &str| {
        let _: () = redis::cmd("CONFIG").arg("SET").arg("tracking-table-max-keys").arg(max).query(admin).expect("SET");
    };
    set_max(&mut admin, "2");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for("trk-config:0")], "the oldest key goes");
    // A node changes all the parameters of one CONFIG SET or none: one the nodes refuse for
    // another parameter's value changes the proxy's table neither, alone or in a transaction
    // (where the refusal is EXEC's element).
    let mut raw = open(&proxy, false);
    let refused = ["CONFIG", "SET", "tracking-table-max-keys", "1", "maxmemory-policy", "bogus"];
    let reply = call_quiet(&mut raw, &refused);
    assert!(reply.starts_with("-ERR CONFIG SET failed"), "{reply}");
    assert!(drain(&mut reader, Duration::from_millis(300), 10).is_empty(), "nothing evicted");
    assert_eq!(call_quiet(&mut raw, &["MULTI"]), "+OK\r\n");
    assert_eq!(call_quiet(&mut raw, &refused), "+QUEUED\r\n");
    let exec = call_quiet(&mut raw, &["EXEC"]);
    assert!(exec.starts_with("*1\r\n-ERR CONFIG SET failed"), "{exec}");
    assert!(drain(&mut reader, Duration::from_millis(300), 10).is_empty(), "nothing evicted in a transaction");
    assert_eq!(proxy.metric("redisforge_tracking_keys"), Some(2.0));
    // After a command the proxy answers itself (its reply is EXEC's first element).
    let _: () = redis::pipe()
        .atomic()
        .cmd("CLIENT")
        .arg("GETNAME")
        .ignore()
        .cmd("CONFIG")
        .arg("SET")
        .arg("tracking-table-max-keys")
        .arg("1")
        .ignore()
        .query(&mut admin)
        .expect("MULTI CONFIG SET EXEC");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for("trk-config:1")]);
    assert_eq!(proxy.metric("redisforge_tracking_keys"), Some(1.0));
    assert_eq!(stat(&mut admin, "tracking_total_keys"), "1");
    // Redis' default again, on the nodes of the shared cluster too.
    set_max(&mut admin, "1000000");
    assert!(drain(&mut reader, Duration::from_millis(300), 10).is_empty(), "nothing more evicted");
}

#[test]
fn a_lost_tracking_stream_flushes_every_cache_and_comes_back() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start(cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, cluster, &[]);
    let mut writer = proxy.client();
    let key = cluster.key_per_master("trk-lost").remove(0);
    let master = cluster.node_for_key(&key);
    set(&mut writer, &key, "a");
    call_quiet(&mut reader, &["GET", &key]);
    // Kill this proxy's tracking connection on the master: named after the proxy's pid, with
    // the flags t (tracking) and B (BCAST).
    let mut node = cluster.client(&master);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut node).expect("CLIENT LIST");
    let name = format!("name=redisforge-tracking-{} ", proxy.pid());
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.contains(&name))
        .filter(|l| l.split(' ').any(|f| f.starts_with("flags=") && f.contains('t') && f.contains('B')))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_string))
        .collect();
    assert!(!ids.is_empty(), "no tracking connection on {master}:\n{list}");
    for id in &ids {
        let _: redis::Value = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(&mut node).expect("KILL");
    }
    assert_eq!(expect_frames(&mut reader, 1), vec![FLUSH_PUSH.to_string()]);
    wait_streams(&proxy, cluster);
    call_quiet(&mut reader, &["GET", &key]);
    set(&mut writer, &key, "b");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for(&key)]);
}

/// Failover, slot migration and node flushes, on a cluster of this test's own.
#[test]
fn failover_migration_and_flushall_leave_no_cache_stale() {
    let cluster = Cluster::start(ClusterOptions { masters: 3, replicas_per_master: 1, ..ClusterOptions::default() });
    let proxy = Proxy::start(&cluster, ProxyOptions::default());
    let mut reader = tracker(&proxy, &cluster, &[]);
    let mut writer = proxy.client();
    let keys = cluster.key_per_master("trk-fo");
    for key in &keys {
        set(&mut writer, key, "1");
        call_quiet(&mut reader, &["GET", key]);
    }
    // A manual failover: the old master leaves the map, the new one's stream comes up: caches
    // are flushed, and the new master's changes are heard.
    let old = cluster.node_for_key(&keys[0]);
    let replica = cluster.replicas_of(&old).remove(0);
    cluster.failover(&replica);
    let frames = expect_frames(&mut reader, 1);
    assert_eq!(frames, vec![FLUSH_PUSH.to_string()]);
    wait_streams(&proxy, &cluster);
    drain(&mut reader, Duration::from_millis(300), 10);
    assert_eq!(call_quiet(&mut reader, &["GET", &keys[0]]), "$1\r\n1\r\n");
    set(&mut writer, &keys[0], "2");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for(&keys[0])]);

    // A slot migration: MIGRATE deletes the key on the old owner (an invalidation), and writes on
    // the new owner are heard.
    let key = &keys[1];
    assert_eq!(call_quiet(&mut reader, &["GET", key]), "$1\r\n1\r\n");
    let (from, to) = (cluster.node_for_key(key), cluster.node_for_key(&keys[2]));
    cluster.migrate_slot(cluster.slot_for_key(key), &from, &to);
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for(key)]);
    let read_again = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        call_quiet(&mut reader, &["GET", key]) == "$1\r\n1\r\n"
    });
    assert!(read_again);
    set(&mut writer, key, "3");
    assert_eq!(expect_frames(&mut reader, 1), vec![push_for(key)]);

    // FLUSHALL (through the proxy: every master) tells each tracker once.
    call_quiet(&mut reader, &["GET", &keys[2]]);
    let _: () = redis::cmd("FLUSHALL").query(&mut writer).expect("FLUSHALL");
    assert_eq!(expect_frames(&mut reader, 1), vec![FLUSH_PUSH.to_string()]);
    assert_eq!(drain(&mut reader, Duration::from_millis(300), 5), Vec::<String>::new());

    // With reads from replicas, tracked reads still go to masters (the streams watch masters);
    // untracked reads use the replicas.
    let replica_reads = ProxyOptions {
        extra_toml: "[upstream]\nseeds = @SEEDS@\nread_from = \"replica\"\n".into(),
        ..ProxyOptions::default()
    };
    let replicas_proxy = Proxy::start(&cluster, replica_reads);
    let key = &keys[2];
    set(&mut writer, key, "r");
    let (master, replica) = (cluster.node_for_key(key), cluster.replicas_of(&cluster.node_for_key(key)).remove(0));
    let gets = |addr: &str| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut cluster.client(addr)).expect("INFO");
        let line = info.lines().find(|l| l.starts_with("cmdstat_get:")).unwrap_or("cmdstat_get:calls=0,");
        line["cmdstat_get:calls=".len()..].split(',').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let mut plain = open(&replicas_proxy, false);
    let (master_before, replica_before) = (gets(&master), gets(&replica));
    for _ in 0..20 {
        call_quiet(&mut plain, &["GET", key]);
    }
    assert!(gets(&replica) >= replica_before + 20, "untracked reads go to the replica");
    let mut tracked = tracker(&replicas_proxy, &cluster, &[]);
    let (master_before_tracked, replica_before_tracked) = (gets(&master), gets(&replica));
    assert!(master_before_tracked >= master_before);
    for _ in 0..20 {
        call_quiet(&mut tracked, &["GET", key]);
    }
    assert!(gets(&master) >= master_before_tracked + 20, "tracked reads go to the master");
    assert!(gets(&replica) < replica_before_tracked + 20, "tracked reads do not go to the replica");

    // A master killed: its stream breaks, every cache is flushed, and after the promotion the new
    // master's changes are heard.
    let victim = cluster.node_for_key(&keys[1]);
    set(&mut writer, &keys[1], "3");
    assert_eq!(call_quiet(&mut reader, &["GET", &keys[1]]), "$1\r\n3\r\n");
    let started = Instant::now();
    cluster.kill(&victim);
    assert_eq!(expect_frames(&mut reader, 1), vec![FLUSH_PUSH.to_string()]);
    assert!(started.elapsed() < Duration::from_secs(5), "flushed after {:?}", started.elapsed());
    cluster.wait_state_ok();
    wait_streams(&proxy, &cluster);
    drain(&mut reader, Duration::from_millis(300), 10);
    let readable = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        call(&mut reader, &["GET", &keys[1]], &mut Vec::new()) == "$1\r\n3\r\n"
    });
    assert!(readable, "the promoted replica serves the key");
    set(&mut writer, &keys[1], "4");
    assert!(expect_frames(&mut reader, 1).contains(&push_for(&keys[1])));
    cluster.shutdown();
}
