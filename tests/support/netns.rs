//! Network namespaces joined by a bridge in the test's own namespace, to partition real nodes.
//!
//! Namespace `i` gets the address `10.213.S.(i + 2)` on a /24 of its own (`S` is picked free);
//! the test process reaches every namespace through the bridge (`10.213.S.1`). [`Netns::cut`]
//! drops every packet between two namespaces, [`Netns::cut_from_host`] every packet from a
//! namespace to the test's side, as a cut link does: no reset, no error, silence. `mend_*` lets
//! them through again.
//!
//! Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); [`Netns::create`] says why
//! it cannot, so a test can skip with that reason. Everything is removed on drop; processes
//! started in a namespace must be killed by the caller first (a namespace lives as long as a
//! process in it).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// At most this many namespaces per bridge (addresses .2 to .201).
const MAX_NAMESPACES: usize = 200;

/// The namespaces and the bridge between them.
#[derive(Debug)]
pub struct Netns {
    name: String,
    subnet: u8,
    count: usize,
}

impl Netns {
    /// Creates `count` namespaces and the bridge.
    ///
    /// # Errors
    /// Why the machine cannot (not root, no `ip`, namespaces disabled): skip the test with it.
    pub fn create(count: usize) -> Result<Netns, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!((1..=MAX_NAMESPACES).contains(&count), "1 to {MAX_NAMESPACES} namespaces");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names have at most 15 bytes: "rf" + 6 hex digits + at most 5 more.
        let name = format!("rf{:06x}", ((std::process::id() << 4) | (n & 0xf)) & 0xff_ffff);
        let subnet = free_subnet()?;
        let netns = Netns { name, subnet, count };
        netns.build().inspect_err(|_| netns.remove())?;
        Ok(netns)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        ip(&["addr", "add", &format!("{}/24", self.host_ip()), "dev", &bridge])?;
        for i in 0..self.count {
            let (ns, veth, peer) = (self.ns(i), self.veth(i), format!("{}p", self.veth(i)));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &veth, "netns", &ns])?;
            ip(&["link", "set", &peer, "master", &bridge])?;
            ip(&["link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", &veth])?;
            ip(&["-n", &ns, "link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// How many namespaces there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The address of namespace `i`.
    pub fn ip(&self, i: usize) -> String {
        assert!(i < self.count, "namespace {i} of {}", self.count);
        format!("10.213.{}.{}", self.subnet, i + 2)
    }

    /// The test process' address on the bridge: where connections from the host come from.
    pub fn host_ip(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// A command run inside namespace `i` (`ip netns exec` execs it in place, so the child's pid
    /// is the program's own).
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(i), program]);
        command
    }

    /// Drops every packet between namespaces `a` and `b`, both ways.
    ///
    /// # Errors
    /// When a route cannot be added (already cut).
    pub fn cut(&self, a: usize, b: usize) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            ip(&["-n", &self.ns(from), "route", "add", "blackhole", &format!("{}/32", self.ip(to))])?;
        }
        Ok(())
    }

    /// Lets packets between `a` and `b` through again.
    ///
    /// # Errors
    /// When a route cannot be removed (not cut).
    pub fn mend(&self, a: usize, b: usize) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            ip(&["-n", &self.ns(from), "route", "del", "blackhole", &format!("{}/32", self.ip(to))])?;
        }
        Ok(())
    }

    /// Drops every packet namespace `i` sends to the host: what the host sends arrives, but no
    /// answer comes back, so connections from the host see silence.
    ///
    /// # Errors
    /// When the route cannot be added.
    pub fn cut_from_host(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.ns(i), "route", "add", "blackhole", &format!("{}/32", self.host_ip())])
    }

    /// Undoes [`Netns::cut_from_host`].
    ///
    /// # Errors
    /// When the route cannot be removed.
    pub fn mend_to_host(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.ns(i), "route", "del", "blackhole", &format!("{}/32", self.host_ip())])
    }

    /// The blackhole routes in namespace `i` (what [`Netns::cut`] left there), for failure messages.
    pub fn cuts(&self, i: usize) -> Vec<String> {
        run("ip", &["-n", &self.ns(i), "route", "show", "type", "blackhole"])
            .map(|out| out.lines().map(str::to_owned).collect())
            .unwrap_or_else(|e| vec![e])
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.name)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.name)
    }

    fn remove(&self) {
        for i in 0..self.count {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A /24 under 10.213.0.0/16 that no interface or route on this machine uses yet.
fn free_subnet() -> Result<u8, String> {
    let routes = run("ip", &["-4", "route", "show", "table", "all"])?;
    let start = (std::process::id() % 250) as u8;
    (0..250u8)
        .map(|i| start.wrapping_add(i) % 250 + 1)
        .find(|n| !routes.contains(&format!("10.213.{n}.")))
        .ok_or_else(|| "no free 10.213.x.0/24 subnet".to_string())
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args).map(drop)
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills and reaps a process started with [`Netns::command`].
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
