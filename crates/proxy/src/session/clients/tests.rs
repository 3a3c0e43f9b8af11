use std::time::{Duration, Instant};

use super::{ClientSocket, Clients};
use crate::session::ClientState;

#[test]
fn an_idle_client_is_asked_to_trim_once_per_idle_spell() {
    let clients = Clients::default();
    let register = |id: u64| {
        let peer = format!("127.0.0.1:{id}").parse().expect("address");
        clients.register(&ClientState::new(id, peer, None, 0), ClientSocket::peer_only(peer))
    };
    let idle = register(1);
    let busy = register(2);
    let after = Duration::from_millis(50);
    clients.trim_idle(after);
    assert!(!idle.take_trim() && !busy.take_trim(), "not idle long enough");

    std::thread::sleep(after + Duration::from_millis(10));
    clients.touch(&busy, Instant::now());
    clients.trim_idle(after);
    assert!(idle.take_trim(), "idle since it connected");
    assert!(!busy.take_trim(), "sent something since");
    assert!(!idle.take_trim(), "taken once");

    clients.trim_idle(after);
    assert!(!idle.take_trim(), "asked once per idle spell");

    // A request after the trim (still longer ago than `after`) starts a new spell.
    clients.touch(&idle, Instant::now() - after - Duration::from_millis(5));
    clients.trim_idle(after);
    assert!(idle.take_trim(), "a new spell after a request");
}
