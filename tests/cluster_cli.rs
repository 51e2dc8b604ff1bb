//! The demo, run as a user runs it: `cluster` with each router delivers a
//! message by every rule and exits 0.

// Real processes on real time: the clock is the point here.
#![allow(clippy::disallowed_methods)]

mod procs;

use procs::Proc;

/// Runs the demo with `nodes` nodes: every message — to the last node's
/// id, to a key closest to the last node's id, to the service only the
/// last node runs — arrives at the last node.
fn cluster(nodes: usize, extra: &[&str]) {
    let n = nodes.to_string();
    let mut args = vec!["--nodes", n.as_str()];
    args.extend_from_slice(extra);
    let p = Proc::start("cluster", &args);
    let routes = p.expect("routes learnt", |l| {
        l.starts_with("routes: every node reaches")
    });
    assert!(routes.contains("others"), "{routes}");
    // The three arrive in any order.
    let at = format!("arrived at node {} ", nodes - 1);
    let lines: Vec<String> = (0..3)
        .map(|_| p.expect("a message", |l| l.starts_with("message ")))
        .collect();
    for rule in ["(node:", "(closest:", "(service)"] {
        let line = lines.iter().find(|l| l.contains(rule));
        let line = line.unwrap_or_else(|| panic!("no {rule} message in {lines:?}"));
        assert!(line.contains(&at), "{line}");
    }
    let summary = p.expect("summary", |l| l.starts_with("summary:"));
    assert!(summary.contains("3/3 messages delivered"), "{summary}");
    assert_eq!(p.wait(), 0, "cluster {args:?} exits 0");
}

#[test]
fn the_demo_delivers_by_every_rule_with_the_distance_vector_router() {
    cluster(8, &[]);
}

#[test]
fn the_demo_delivers_by_every_rule_with_the_xor_router() {
    cluster(12, &["--router", "kad"]);
}

#[test]
fn a_bad_router_name_is_refused() {
    let p = Proc::start("cluster", &["--router", "chord"]);
    assert_ne!(p.wait(), 0);
}
