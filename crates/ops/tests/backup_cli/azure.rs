//! `az://` backups against Azurite, the Azure Blob Storage emulator from the npm registry: taken
//! over the network, listed, verified and restored into a cluster of another shape.

use crate::testkit::{AzServer, Nodes, dump};
use crate::{Tool, assert_same_keys, source_with_a_big_value};

#[test]
fn az_backups_are_listed_verified_and_restored_key_for_key() {
    let Some(az) = AzServer::start("backups") else { return };
    let tool = Tool;
    let env = az.env();
    let url = "az://backups/clusters/a";
    let (_source, seed, expected) = source_with_a_big_value();

    let out = tool.ok(&["backup", "--from", &seed, "--to", url], &env);
    let id = out
        .split_whitespace()
        .find_map(|w| w.strip_suffix(':').filter(|w| w.len() == 16 && w.ends_with('Z')))
        .unwrap_or_else(|| panic!("no backup id in {out}"))
        .to_owned();
    let listed = tool.ok(&["backup", "list", url], &env);
    assert!(listed.lines().any(|l| l.starts_with(&id) && l.ends_with("yes")), "{listed}");
    tool.ok(&["backup", "verify", &format!("{url}/{id}")], &env);

    let target = Nodes::cluster(2, 0, &[]);
    tool.ok(&["restore", &format!("{url}/{id}"), "--into", &target.addrs()[0]], &env);
    assert_same_keys(&expected, &dump(&target.masters()));
}
