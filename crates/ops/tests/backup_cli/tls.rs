//! Backups of a TLS-only cluster (`--tls --ca`, and a client certificate where nodes require one):
//! the snapshot streams over TLS, and the restore into another TLS-only cluster of another shape
//! speaks TLS too.

use std::collections::BTreeMap;

use redisforge_tests::{Cluster, ClusterOptions, NodeTls, generate_certs};

use crate::{Tool, only_backup};

/// Every key's value on every master of `cluster` (all strings here).
fn values(cluster: &Cluster) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut all = BTreeMap::new();
    for master in cluster.masters() {
        let mut con = cluster.client(&master);
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
        for key in keys {
            let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
            all.insert(key, value);
        }
    }
    all
}

#[test]
fn tls_clusters_are_backed_up_and_restored_over_tls() {
    let certs = generate_certs();
    let tls = NodeTls::from_dir(certs.path());
    // Client certificates required: the tool must present --cert/--key.
    let options = |masters| ClusterOptions {
        masters,
        replicas_per_master: 0,
        extra_config: vec!["tls-auth-clients yes".to_owned()],
        ..ClusterOptions::default()
    };
    let source = Cluster::start_tls(options(3), tls.clone());
    for i in 0..300 {
        let key = format!("tls:{i}");
        let node = source.node_for_slot(source.slot_for_key(&key));
        let _: () = redis::cmd("SET").arg(&key).arg(format!("v{i}")).query(&mut source.client(&node)).expect("SET");
    }
    let expected = values(&source);
    assert_eq!(expected.len(), 300);
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let (ca, cert, key) = (tls.ca.display().to_string(), tls.cert.display().to_string(), tls.key.display().to_string());
    let seed = source.nodes()[0].clone();
    let tool = Tool;

    // Plain TCP to a TLS port fails with a reason, and leaves nothing behind.
    tool.fails(&["backup", "--from", &seed, "--to", &url], &[]);
    let with_tls = ["--tls", "--ca", ca.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];
    tool.ok(&[&["backup", "--from", &seed, "--to", &url][..], &with_tls].concat(), &[]);
    let id = only_backup(&url, &[]);

    let target = Cluster::start_tls(options(2), tls.clone());
    let into = target.nodes()[0].clone();
    let backup = format!("{url}/{id}");
    tool.ok(&[&["restore", &backup, "--into", &into][..], &with_tls].concat(), &[]);
    assert_eq!(values(&target), expected, "keys after the restore over TLS");
}
