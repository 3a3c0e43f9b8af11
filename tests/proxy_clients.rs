//! CLIENT LIST / INFO / KILL / PAUSE / UNPAUSE act on the proxy's own clients (a node's client list
//! would only show the proxy's pooled connections).

use std::thread;
use std::time::{Duration, Instant};

use redis::Connection;
use redisforge_tests::{Cluster, Proxy, ProxyOptions};

fn named(proxy: &Proxy, name: &str) -> (Connection, i64) {
    let mut con = proxy.client();
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg(name).query(&mut con).expect("CLIENT SETNAME");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).expect("CLIENT ID");
    (con, id)
}

fn list(con: &mut Connection, args: &[&str]) -> Vec<String> {
    let text: String = redis::cmd("CLIENT").arg("LIST").arg(args).query(con).expect("CLIENT LIST");
    text.lines().map(str::to_owned).collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn client_list_and_info_show_the_proxys_clients() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut a, a_id) = named(&proxy, "alpha");
    let (mut b, b_id) = named(&proxy, "beta");
    let _: () = redis::cmd("SET").arg("clients:list").arg("1").query(&mut b).expect("SET");

    let lines = list(&mut a, &[]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let alpha = lines.iter().find(|l| field(l, "name") == Some("alpha")).expect("alpha listed");
    let beta = lines.iter().find(|l| field(l, "name") == Some("beta")).expect("beta listed");
    assert_eq!(field(alpha, "id"), Some(a_id.to_string().as_str()));
    assert_eq!(field(beta, "id"), Some(b_id.to_string().as_str()));
    assert_eq!(field(beta, "cmd"), Some("set"), "{beta}");
    assert_eq!(field(alpha, "flags"), Some("N"));
    assert!(field(alpha, "addr").is_some_and(|addr| addr.starts_with("127.0.0.1:")), "{alpha}");

    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut b).expect("CLIENT INFO");
    assert_eq!(field(info.trim_end(), "name"), Some("beta"));
    assert_eq!(field(info.trim_end(), "id"), Some(b_id.to_string().as_str()));

    assert_eq!(list(&mut a, &["ID", &b_id.to_string()]).len(), 1);
    assert_eq!(list(&mut a, &["TYPE", "normal"]).len(), 2);
    assert_eq!(list(&mut a, &["TYPE", "pubsub"]).len(), 0);
    assert!(list(&mut a, &["TYPE", "master"]).is_empty());
    let bad = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("nope").query::<String>(&mut a).expect_err("bad type");
    assert!(bad.to_string().contains("Unknown client type"), "{bad}");
}

#[test]
fn client_kill_closes_the_named_clients() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut killer, _) = named(&proxy, "killer");
    let (mut victim, victim_id) = named(&proxy, "victim");
    let (mut other, _) = named(&proxy, "other");

    let killed: i64 =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(victim_id).query(&mut killer).expect("CLIENT KILL ID");
    assert_eq!(killed, 1);
    assert!(redis::cmd("PING").query::<String>(&mut victim).is_err(), "the killed client's connection is closed");
    let pong: String = redis::cmd("PING").query(&mut other).expect("the others stay");
    assert_eq!(pong, "PONG");

    // The old form: one address, +OK or an error.
    let addr = field(&list(&mut killer, &[]).into_iter().find(|l| l.contains("name=other")).expect("other"), "addr")
        .expect("addr")
        .to_owned();
    let ok: String = redis::cmd("CLIENT").arg("KILL").arg(&addr).query(&mut killer).expect("CLIENT KILL addr");
    assert_eq!(ok, "OK");
    let gone = redis::cmd("CLIENT").arg("KILL").arg(&addr).query::<String>(&mut killer).expect_err("already gone");
    assert!(gone.to_string().contains("No such client"), "{gone}");

    // SKIPME yes (the default) spares the caller.
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut killer).expect("KILL TYPE");
    assert_eq!(killed, 0, "only the caller is left, and it skips itself");
    let pong: String = redis::cmd("PING").query(&mut killer).expect("the caller stays");
    assert_eq!(pong, "PONG");
}

#[test]
fn client_pause_write_holds_writes_not_reads_and_unpause_releases() {
    let proxy = Proxy::start(Cluster::shared(), ProxyOptions::default());
    let (mut admin, _) = named(&proxy, "admin");
    let (mut worker, _) = named(&proxy, "worker");
    let _: () = redis::cmd("SET").arg("clients:pause").arg("before").query(&mut worker).expect("SET before");

    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("WRITE").query(&mut admin).expect("CLIENT PAUSE WRITE");
    let started = Instant::now();
    let value: String = redis::cmd("GET").arg("clients:pause").query(&mut worker).expect("GET during the pause");
    assert_eq!(value, "before");
    assert!(started.elapsed() < Duration::from_millis(400), "reads are not held: {:?}", started.elapsed());
    let started = Instant::now();
    let _: () = redis::cmd("SET").arg("clients:pause").arg("after").query(&mut worker).expect("SET after the pause");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(400), "the write was not held: {held:?}");
    assert!(held < Duration::from_secs(3), "the write was held too long: {held:?}");

    // ALL holds everything until UNPAUSE, which releases at once.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(20_000).arg("ALL").query(&mut admin).expect("CLIENT PAUSE ALL");
    let waiter = thread::spawn(move || {
        let started = Instant::now();
        let value: String = redis::cmd("GET").arg("clients:pause").query(&mut worker).expect("GET held by ALL");
        (value, started.elapsed())
    });
    thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the GET was not held by PAUSE ALL");
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).expect("CLIENT UNPAUSE");
    let (value, took) = waiter.join().expect("waiter");
    assert_eq!(value, "after");
    assert!(took < Duration::from_secs(5), "UNPAUSE did not release the held client: {took:?}");

    let bad = redis::cmd("CLIENT").arg("PAUSE").arg("soon").query::<()>(&mut admin).expect_err("bad timeout");
    assert!(bad.to_string().contains("timeout is not an integer"), "{bad}");
}
