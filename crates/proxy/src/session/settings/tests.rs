use super::*;

fn plan_of(args: &[&str]) -> Plan {
    plan(&Request::from_args(args))
}

fn rest_of(args: &[&str]) -> Vec<String> {
    match plan_of(args) {
        Plan::Nodes(rest) => (0..rest.argc()).map(|i| String::from_utf8_lossy(rest.arg(i)).into_owned()).collect(),
        other => panic!("expected a rest for the nodes, got {other:?}"),
    }
}

#[test]
fn valid_settings_of_the_proxy_alone_are_the_proxys_to_answer() {
    assert!(matches!(plan_of(&["config", "set", "maxclients", "10"]), Plan::ProxyOnly));
    assert!(matches!(plan_of(&["CONFIG", "SET", "TimeOut", "0", "maxclients", "10"]), Plan::ProxyOnly));
    // Redis' sum of the clients and 32 spare files wraps in an `unsigned int`: no file wanted.
    assert!(matches!(plan_of(&["config", "set", "maxclients", "4294967295"]), Plan::ProxyOnly));
    assert!(matches!(
        plan_of(&["config", "set", "client-output-buffer-limit", "normal 1mb 0 0 pubsub 0 0 0"]),
        Plan::ProxyOnly
    ));
    // An empty value sets no class, as Redis takes it.
    assert!(matches!(plan_of(&["config", "set", "client-output-buffer-limit", ""]), Plan::ProxyOnly));
}

#[test]
fn a_maxclients_the_open_file_limit_cannot_serve_is_refused_as_redis_refuses_it() {
    // No open-file limit reaches 4294967263 + 32 (Linux' `fs.nr_open` is at most 2147483584).
    let Plan::Refused(error) = plan_of(&["config", "set", "MAXCLIENTS", "4294967263"]) else {
        panic!("not refused");
    };
    let text = String::from_utf8_lossy(&error.to_resp()).into_owned();
    let expected = "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - The operating system is \
                    not able to handle the specified number of clients, try with ";
    assert!(text.starts_with(expected), "{text}");
    // Beside a setting of the nodes' too: nothing goes to them.
    assert!(matches!(plan_of(&["config", "set", "maxclients", "4294967263", "maxmemory", "1mb"]), Plan::Refused(_)));
}

#[test]
fn values_redis_refuses_go_to_the_nodes_as_they_came() {
    for bad in ["0", "-1", "4294967296", "010", "+5", " 5", "5 ", "abc", ""] {
        assert!(matches!(plan_of(&["config", "set", "maxclients", bad]), Plan::AsIs), "maxclients {bad:?}");
    }
    for bad in ["-1", "2147483648", "1.5", "-0"] {
        assert!(matches!(plan_of(&["config", "set", "timeout", bad]), Plan::AsIs), "timeout {bad:?}");
    }
    for bad in ["normal 1mb 0", "master 0 0 0", "normal 1xb 0 0", "pubsub 0 0 -1"] {
        let args = ["config", "set", "client-output-buffer-limit", bad];
        assert!(matches!(plan_of(&args), Plan::AsIs), "client-output-buffer-limit {bad:?}");
    }
    // One refused value sends the whole command: the nodes refuse it and nothing changes.
    assert!(matches!(plan_of(&["config", "set", "maxmemory", "1mb", "timeout", "x"]), Plan::AsIs));
    // A setting named twice is the nodes' `duplicate parameter` to refuse, as is a missing value.
    assert!(matches!(plan_of(&["config", "set", "timeout", "1", "TIMEOUT", "2"]), Plan::AsIs));
    assert!(matches!(plan_of(&["config", "set", "timeout", "1", "maxmemory"]), Plan::AsIs));
}

#[test]
fn the_nodes_get_what_is_left_and_anything_else_as_it_came() {
    assert_eq!(
        rest_of(&["config", "set", "maxclients", "10", "maxmemory", "1mb"]),
        ["config", "set", "maxmemory", "1mb"]
    );
    assert_eq!(
        rest_of(&[
            "config",
            "set",
            "client-output-buffer-limit",
            "normal 1mb 0 0 slave 1 2 3 replica 4 5 6",
            "timeout",
            "3"
        ]),
        ["config", "set", "client-output-buffer-limit", "slave 1 2 3 replica 4 5 6"]
    );
    // Settings the nodes keep too, and an unknown one, stay.
    assert_eq!(
        rest_of(&["config", "set", "tracking-table-max-keys", "5", "timeout", "3", "nosuch", "x"]),
        ["config", "set", "tracking-table-max-keys", "5", "nosuch", "x"]
    );
    assert!(matches!(plan_of(&["config", "set", "tracking-table-max-keys", "5"]), Plan::AsIs));
    assert!(matches!(plan_of(&["config", "set", "client-output-buffer-limit", "replica 1 2 3"]), Plan::AsIs));
    assert!(matches!(plan_of(&["config", "get", "maxclients"]), Plan::AsIs));
    assert!(matches!(plan_of(&["config", "set"]), Plan::AsIs));
}

#[test]
fn what_is_queued_in_a_transaction_loses_the_proxys_part_on_its_way_out() {
    let sent = for_nodes(Request::from_args(&["config", "set", "timeout", "3", "maxmemory", "1mb"]));
    assert_eq!(sent.bytes(), Request::from_args(&["config", "set", "maxmemory", "1mb"]).bytes());
    let get = Request::from_args(&["get", "k"]);
    assert_eq!(for_nodes(get.clone()).bytes(), get.bytes());
}
