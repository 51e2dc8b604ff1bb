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
    g.bench_function("deliver", |b| {
        b.iter(|| {
            for f in &frames {
                net.handle_frame(Instant::ZERO, conn, f);
            }
            while net.poll_output().is_some() {}
        })
    });
    assert!(net.behavior::<Sink>().unwrap().received >= BATCH);

    // Routed by node rule to another node: TTL rewritten, queued for the next hop.
    let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| frame_to(NodeId(4), i)).collect();
    let (mut net, conn) = core_with_neighbours();
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
    assert!(net.stats().forwarded >= BATCH);
    g.finish();
}

criterion_group!(benches, codec, dispatch);
criterion_main!(benches);
