//! The per-command series, `commands_total{command,result}` and
//! `command_duration_seconds{command}`, counted per thread and summed when scraped.
//!
//! Every reply a client gets adds to them, on every worker thread. As shared prometheus handles
//! that was a counter and a histogram (three atomic read-modify-writes) per reply on cache lines
//! every worker writes; here each thread owns a shard it alone writes (plain loads and stores),
//! and a scrape adds the shards up. The exported names, labels and buckets are unchanged.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::{DURATION_BUCKETS, PREFIX, labels};

/// Buckets per label: one per upper bound and the last for values above them all.
const BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// The two families, registered as one collector (a handle: clones share the counts).
#[derive(Clone)]
pub struct CommandSeries(Arc<Series>);

struct Series {
    /// Tells this registry's shards from another's on the same thread (tests make several).
    id: u64,
    shards: Mutex<Vec<Arc<Shard>>>,
    descs: [Desc; 2],
}

/// One thread's counts, by label index.
struct Shard {
    tallies: Box<[Tally]>,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    error: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// The latencies' sum, as `f64` bits.
    sum: AtomicU64,
}

thread_local! {
    /// This thread's shard of each registry it counted for.
    static SHARDS: RefCell<Vec<(u64, Arc<Shard>)>> = const { RefCell::new(Vec::new()) };
}

/// Adds to a counter only this thread writes: no read-modify-write needed.
#[inline]
fn add(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

impl CommandSeries {
    pub(super) fn new(help_total: &str, help_duration: &str) -> CommandSeries {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let desc = |name: &str, help: &str, labels: &[&str]| {
            let labels = labels.iter().map(|l| l.to_string()).collect();
            Desc::new(format!("{PREFIX}{name}"), help.to_string(), labels, Default::default())
                .expect("static, valid metric names")
        };
        CommandSeries(Arc::new(Series {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
            descs: [
                desc("commands_total", help_total, &["command", "result"]),
                desc("command_duration_seconds", help_duration, &["command"]),
            ],
        }))
    }

    /// Counts `count` replies of the command at `label` (an index from [`labels::label_index`];
    /// out of range counts as `"other"`): errors or not, each `seconds` after its request was read.
    pub fn record(&self, label: usize, error: bool, seconds: f64, count: u64) {
        self.with_shard(|shard| {
            let tally = &shard.tallies[label.min(labels::OTHER)];
            add(if error { &tally.error } else { &tally.ok }, count);
            let bucket = DURATION_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS - 1);
            add(&tally.buckets[bucket], count);
            let sum = f64::from_bits(tally.sum.load(Ordering::Relaxed)) + seconds * count as f64;
            tally.sum.store(sum.to_bits(), Ordering::Relaxed);
        });
    }

    /// Replies counted so far under every label (INFO's `total_commands_processed`).
    pub fn total(&self) -> u64 {
        let shards = self.lock();
        let tallies = shards.iter().flat_map(|s| s.tallies.iter());
        tallies.map(|t| t.ok.load(Ordering::Relaxed) + t.error.load(Ordering::Relaxed)).sum()
    }

    fn with_shard(&self, count: impl FnOnce(&Shard)) {
        SHARDS.with_borrow_mut(|mine| {
            if let Some((_, shard)) = mine.iter().find(|(id, _)| *id == self.0.id) {
                return count(shard);
            }
            let tallies = (0..labels::LABELS.len()).map(|_| Tally::default()).collect();
            let shard = Arc::new(Shard { tallies });
            self.lock().push(Arc::clone(&shard));
            count(&shard);
            mine.push((self.0.id, shard));
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Shard>>> {
        // A panic while holding the lock leaves a valid list: go on with it.
        self.0.shards.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every label's counts, summed over the shards.
    fn sums(&self) -> Vec<Sum> {
        let mut sums = vec![Sum::default(); labels::LABELS.len()];
        for shard in self.lock().iter() {
            for (sum, tally) in sums.iter_mut().zip(shard.tallies.iter()) {
                sum.ok += tally.ok.load(Ordering::Relaxed);
                sum.error += tally.error.load(Ordering::Relaxed);
                sum.seconds += f64::from_bits(tally.sum.load(Ordering::Relaxed));
                for (into, bucket) in sum.buckets.iter_mut().zip(&tally.buckets) {
                    *into += bucket.load(Ordering::Relaxed);
                }
            }
        }
        sums
    }
}

#[derive(Clone, Default)]
struct Sum {
    ok: u64,
    error: u64,
    seconds: f64,
    buckets: [u64; BUCKETS],
}

impl Collector for CommandSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    /// Every label's series, zeros included (as the `*Vec` handles made at start showed them).
    fn collect(&self) -> Vec<MetricFamily> {
        let sums = self.sums();
        let mut totals = Vec::with_capacity(2 * sums.len());
        let mut durations = Vec::with_capacity(sums.len());
        for (label, sum) in labels::LABELS.iter().zip(&sums) {
            for (result, count) in [("ok", sum.ok), ("error", sum.error)] {
                let mut counter = proto::Counter::default();
                counter.set_value(count as f64);
                let mut metric = proto::Metric::from_label(vec![pair("command", label), pair("result", result)]);
                metric.set_counter(counter);
                totals.push(metric);
            }
            let mut metric = proto::Metric::from_label(vec![pair("command", label)]);
            metric.set_histogram(histogram(sum));
            durations.push(metric);
        }
        let [total, duration] = &self.0.descs;
        vec![family(total, MetricType::COUNTER, totals), family(duration, MetricType::HISTOGRAM, durations)]
    }
}

fn histogram(sum: &Sum) -> proto::Histogram {
    let mut cumulative = 0;
    let buckets = DURATION_BUCKETS
        .iter()
        .zip(&sum.buckets)
        .map(|(&bound, &count)| {
            cumulative += count;
            let mut bucket = proto::Bucket::default();
            bucket.set_cumulative_count(cumulative);
            bucket.set_upper_bound(bound);
            bucket
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_sample_count(sum.ok + sum.error);
    histogram.set_sample_sum(sum.seconds);
    histogram.set_bucket(buckets);
    histogram
}

fn pair(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}
