//! The demo, run as a user runs it: `cluster` with each router delivers a
//! message by every rule and exits 0.

// Real processes on real time: the clock is the point here.
#![allow(clippy::disallowed_methods)]

mod procs;

use procs::Proc;

fn cluster(args: &[&str]) {
    let p = Proc::start("cluster", args);
    let routes = p.expect("routes learnt", |l| {
        l.starts_with("routes: every node reaches")
    });
    assert!(routes.contains("others"), "{routes}");
    for rule in ["node:", "closest:", "(service)"] {
        p.expect(rule, |l| l.starts_with("message ") && l.contains(rule));
    }
    let summary = p.expect("summary", |l| l.starts_with("summary:"));
    assert!(summary.contains("3/3 messages delivered"), "{summary}");
    assert_eq!(p.wait(), 0, "cluster {args:?} exits 0");
}

#[test]
fn the_demo_delivers_by_every_rule_with_the_distance_vector_router() {
    cluster(&["--nodes", "8"]);
}

#[test]
fn the_demo_delivers_by_every_rule_with_the_xor_router() {
    cluster(&["--router", "kad", "--nodes", "12"]);
}

#[test]
fn a_bad_router_name_says_which_exist() {
    let p = Proc::start("cluster", &["--router", "chord"]);
    let code = p.wait();
    assert_ne!(code, 0);
}
