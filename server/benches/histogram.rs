//! Why `/metrics` keeps channels-core's lock-free latency histogram instead
//! of `prometheus-client`'s (a mutex per observation): one observation on
//! one thread, and on two threads at once (every connection records into
//! the same histogram).
//!
//! ```sh
//! cargo bench -p channels-server --bench histogram
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use channels_core::consumer::{Histogram, LATENCY_BUCKETS};
use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::metrics::histogram::Histogram as PromHistogram;

const SAMPLE: Duration = Duration::from_micros(730);

fn two_threads(iters: u64, observe: impl Fn() + Send + Sync + 'static) -> Duration {
    let observe = Arc::new(observe);
    let other = {
        let observe = observe.clone();
        std::thread::spawn(move || {
            for _ in 0..iters {
                observe();
            }
        })
    };
    let started = Instant::now();
    for _ in 0..iters {
        observe();
    }
    let elapsed = started.elapsed();
    other.join().expect("bench thread");
    elapsed
}

fn histograms(c: &mut Criterion) {
    let lock_free = Arc::new(Histogram::default());
    let prom = Arc::new(PromHistogram::new(LATENCY_BUCKETS));
    let mut group = c.benchmark_group("histogram_observe");
    group.bench_function("lock_free/1_thread", |b| {
        b.iter(|| lock_free.observe(black_box(SAMPLE)));
    });
    group.bench_function("prometheus_client/1_thread", |b| {
        b.iter(|| prom.observe(black_box(SAMPLE).as_secs_f64()));
    });
    group.bench_function("lock_free/2_threads", |b| {
        let h = lock_free.clone();
        b.iter_custom(|iters| {
            let h = h.clone();
            two_threads(iters, move || h.observe(black_box(SAMPLE)))
        });
    });
    group.bench_function("prometheus_client/2_threads", |b| {
        let h = prom.clone();
        b.iter_custom(|iters| {
            let h = h.clone();
            two_threads(iters, move || h.observe(black_box(SAMPLE).as_secs_f64()))
        });
    });
    group.finish();
}

criterion_group!(benches, histograms);
criterion_main!(benches);
