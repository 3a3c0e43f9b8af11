//! Two network namespaces joined by a bridge in the test's own namespace, to partition real
//! nodes: side A and side B each get an address on a /24 of their own, the test process reaches
//! both through the bridge, and [`Netns::partition`] drops every packet between A and B (as a
//! cut link does: no reset, no error, silence) until [`Netns::heal`].
//!
//! Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); [`Netns::create`] says why
//! it cannot, so a test can skip with that reason. Everything is removed on drop; processes
//! started in a namespace must be killed by the caller first (a namespace lives as long as a
//! process in it).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The two sides and the bridge between them.
#[derive(Debug)]
pub struct Netns {
    name: String,
    subnet: u8,
}

/// One side of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Netns {
    /// Creates both namespaces and the bridge.
    ///
    /// # Errors
    /// Why the machine cannot (not root, no `ip`, namespaces disabled): skip the test with it.
    pub fn create() -> Result<Netns, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names have at most 15 bytes: "rf" + 6 hex digits + a 3-byte suffix.
        let name = format!("rf{:06x}", ((std::process::id() << 4) | (n & 0xf)) & 0xff_ffff);
        let subnet = free_subnet()?;
        let netns = Netns { name, subnet };
        netns.build().inspect_err(|_| netns.remove())?;
        Ok(netns)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        ip(&["addr", "add", &format!("10.213.{}.1/24", self.subnet), "dev", &bridge])?;
        for side in [Side::A, Side::B] {
            let (ns, veth, peer) = (self.ns(side), self.veth(side), format!("{}{}", self.veth(side), "p"));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &veth, "netns", &ns])?;
            ip(&["link", "set", &peer, "master", &bridge])?;
            ip(&["link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.ip(side)), "dev", &veth])?;
            ip(&["-n", &ns, "link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The address of `side`.
    pub fn ip(&self, side: Side) -> String {
        let host = match side {
            Side::A => 2,
            Side::B => 3,
        };
        format!("10.213.{}.{host}", self.subnet)
    }

    /// A command run inside `side`'s namespace (`ip netns exec` execs it in place, so the child's
    /// pid is the program's own).
    pub fn command(&self, side: Side, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(side), program]);
        command
    }

    /// Drops every packet between the sides, both ways.
    ///
    /// # Panics
    /// When the routes cannot be added.
    pub fn partition(&self) {
        for (side, other) in [(Side::A, Side::B), (Side::B, Side::A)] {
            let route = format!("{}/32", self.ip(other));
            ip(&["-n", &self.ns(side), "route", "add", "blackhole", &route]).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Lets packets between the sides through again.
    ///
    /// # Panics
    /// When the routes cannot be removed.
    pub fn heal(&self) {
        for (side, other) in [(Side::A, Side::B), (Side::B, Side::A)] {
            let route = format!("{}/32", self.ip(other));
            ip(&["-n", &self.ns(side), "route", "del", "blackhole", &route]).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn ns(&self, side: Side) -> String {
        format!("{}-{side:?}", self.name)
    }

    fn veth(&self, side: Side) -> String {
        format!("{}{}", self.name, if side == Side::A { "va" } else { "vb" })
    }

    fn bridge(&self) -> String {
        format!("{}br", self.name)
    }

    fn remove(&self) {
        for side in [Side::A, Side::B] {
            let _ = ip(&["netns", "del", &self.ns(side)]);
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
