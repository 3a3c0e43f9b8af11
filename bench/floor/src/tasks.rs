//! Floor "tasks": the proxy's present architecture with its features stripped — a tokio task per
//! client and per node connection (the futures of `shape.rs`). See README.md.

#[path = "../../../crates/proxy/src/upstream/queue.rs"]
#[allow(dead_code)]
mod queue;
mod resp;
mod shape;

fn main() {
    let (listen, seeds) = resp::config().expect("usage: floor-tasks --config FILE (bench/callgrind.sh's config)");
    let (masters, owner) = resp::slot_map(&seeds[0]).expect("the slot map from the first seed");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(shape::serve(listen, masters, owner, |job| {
        tokio::spawn(job);
    }));
}
