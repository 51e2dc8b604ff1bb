//! Hot paths of the core: the header codec and one core's dispatch.
#![allow(missing_docs)] // criterion_group! generates undocumented public fns
//!
//! `cargo bench -p plexus-bench --bench core`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use plexus::wire::Frame;
use plexus::{Instant, NodeId, Output};
use plexus_bench::{core_with_neighbours, frame_to, Sink};

const BATCH: u64 = 10_000;

fn codec(c: &mut Criterion) {
    let frame = frame_to(NodeId(1), 1);
    let header = Frame::decode(&frame, 1 << 20).unwrap().header;
    let mut g = c.benchmark_group("header");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| {
            Frame::decode(black_box(&frame), 1 << 20)
                .unwrap()
                .header
                .ttl
        })
    });
    g.bench_function("encode", |b| {
        b.iter(|| black_box(&header).to_bytes(black_box(40)))
    });
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(BATCH));

    // Routed by node rule to this node, decoded, delivered to a behaviour.
    let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| frame_to(NodeId(1), i)).collect();
    let (mut net, conn) = core_with_neighbours();
    for f in &frames {
        net.handle_frame(Instant::ZERO, conn, f);
    }
    assert_eq!(
        net.behavior::<Sink>().unwrap().received,
        BATCH,
        "all delivered"
    );
    assert!(net.poll_output().is_none(), "nothing but deliveries");
    g.bench_function("deliver", |b| {
        b.iter(|| {
            for f in &frames {
                net.handle_frame(Instant::ZERO, conn, f);
            }
            while net.poll_output().is_some() {}
        })
    });

    // Routed by node rule to another node: TTL rewritten, queued for the next hop.
    let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| frame_to(NodeId(4), i)).collect();
    let (mut net, conn) = core_with_neighbours();
    for f in &frames {
        net.handle_frame(Instant::ZERO, conn, f);
    }
    assert_eq!(net.stats().forwarded, BATCH, "all forwarded");
    while net.poll_output().is_some() {}
    g.bench_function("forward", |b| {
        b.iter(|| {
            for f in &frames {
                net.handle_frame(Instant::ZERO, conn, f);
            }
            let mut sent = 0u64;
            while let Some(o) = net.poll_output() {
                if let Output::Send { frame, .. } = o {
                    sent += frame.len() as u64;
                }
            }
            black_box(sent)
        })
    });
    g.finish();
}

/// Lookups on a 10,000-entry distance-vector table.
fn router(c: &mut Criterion) {
    use plexus::router::dv::{DvRouter, RouteEntry};
    use plexus::router::ServiceSet;
    use plexus::{Rng, RouterTable, ServiceId};
    let mut rng = Rng::new(1);
    let ids: Vec<NodeId> = (0..10_000).map(|_| NodeId(rng.next_u64())).collect();
    let services: ServiceSet = [ServiceId(5)].into_iter().collect();
    let table = DvRouter::with_routes(
        NodeId(rng.next_u64()),
        ids.iter().enumerate().map(|(i, id)| {
            (
                *id,
                RouteEntry {
                    next_hop: ids[i % 8],
                    metric: 1000 + (i as u32 % 97) * 100,
                    hops: (i % 7) as u8 + 1,
                    services: if i % 100 == 0 {
                        services
                    } else {
                        ServiceSet::EMPTY
                    },
                },
            )
        }),
    );
    let keys: Vec<NodeId> = (0..1024).map(|_| NodeId(rng.next_u64())).collect();
    let mut g = c.benchmark_group("router_10k");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("path_to_node", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            table.path_to_node(black_box(ids[i]))
        })
    });
    g.bench_function("path_to_key", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            table.path_to_key(black_box(keys[i]))
        })
    });
    g.bench_function("path_to_service", |b| {
        b.iter(|| table.path_to_service(black_box(ServiceId(5))))
    });
    g.finish();
}

criterion_group!(benches, codec, dispatch, router);
criterion_main!(benches);
