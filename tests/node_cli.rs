//! The `node` example as a user runs it: two processes on loopback find
//! each other and exchange pings; Ctrl-C (SIGINT) shuts them down cleanly;
//! a bad flag gets a message and exit code 2. `cargo test` builds the
//! examples, so the binary sits next to this test's.

// Real processes on real time: the clock is the point here.
#![allow(clippy::disallowed_methods)]

mod procs;

use std::process::Command;

fn node_bin() -> std::path::PathBuf {
    procs::example_bin("node")
}

/// The `node` example.
struct Proc(procs::Proc);

impl std::ops::Deref for Proc {
    type Target = procs::Proc;
    fn deref(&self) -> &procs::Proc {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut procs::Proc {
        &mut self.0
    }
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        Proc(procs::Proc::start("node", args))
    }

    /// Sends `sig`, then expects the clean-shutdown line and the exit code.
    fn stop_with(self, sig: &str) -> i32 {
        self.signal(sig);
        self.expect("shutting down", |l| l.contains("shutting down"));
        self.0.wait()
    }

    fn interrupt_and_wait(self) -> i32 {
        self.stop_with("-INT")
    }
}

#[test]
fn two_nodes_find_each_other_and_ping() {
    let dir = std::env::temp_dir().join(format!("plexus-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ka, kb) = (dir.join("a.key"), dir.join("b.key"));
    let a = Proc::start(&[
        "--key-file",
        ka.to_str().unwrap(),
        "--listen",
        "quic://127.0.0.1:0",
        "--status-every",
        "1",
    ]);
    let id_a = a
        .expect("the node id", |l| l.starts_with("node id "))
        .trim_start_matches("node id ")
        .to_string();
    let addr_a = a
        .expect("the address", |l| l.starts_with("listening on "))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let seed = format!("{id_a}@{addr_a}");
    let b = Proc::start(&[
        "--key-file",
        kb.to_str().unwrap(),
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "quic://127.0.0.1:0",
        "--seed",
        &seed,
        "--status-every",
        "1",
    ]);
    let id_b = b
        .expect("the node id", |l| l.starts_with("node id "))
        .trim_start_matches("node id ")
        .to_string();
    assert_ne!(id_a, id_b);
    b.expect("the connection", |l| {
        l.starts_with(&format!("connected to {id_a} (c0) over quic://127.0.0.1:"))
    });
    a.expect("the connection", |l| {
        l.starts_with(&format!("connected to {id_b}"))
    });
    // Ping has measured the RTT on both sides.
    for (p, peer) in [(&a, &id_b), (&b, &id_a)] {
        p.expect("a measured RTT", |l| {
            l.contains(&format!("{peer} rtt ")) && !l.contains("rtt ?")
        });
    }
    assert_eq!(b.interrupt_and_wait(), 0);
    assert_eq!(a.interrupt_and_wait(), 0);
    // The key files were created, and a restart keeps the id.
    let again = Proc::start(&[
        "--key-file",
        ka.to_str().unwrap(),
        "--listen",
        "quic://127.0.0.1:0",
    ]);
    assert_eq!(
        again.expect("the node id", |l| l.starts_with("node id ")),
        format!("node id {id_a}")
    );
    assert_eq!(again.interrupt_and_wait(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_flag_gets_a_message_and_exit_code_two() {
    for (args, says) in [
        (vec!["--bogus"], "unexpected argument '--bogus'"),
        (
            vec!["--listen", "udp://1.2.3.4:5"],
            "unknown scheme \"udp\"",
        ),
        (
            vec!["--seed", "xyz@quic://127.0.0.1:1"],
            "is not 16 hex digits",
        ),
        (vec!["--behaviours", "ping,nope"], "invalid value 'nope'"),
        (
            vec!["--behaviours", "ping,broadcast"],
            "--behaviours broadcast needs membership",
        ),
        (
            vec!["--seed", "0000000000000001@mem://5"],
            "this node dials quic:// and tcp:// addresses only",
        ),
    ] {
        let out = Command::new(node_bin()).args(&args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// SIGINT as soon as the node has printed its id (the listeners are
/// installed before any line), SIGTERM likewise, and SIGINT right after a
/// status line (while the loop may be busy with the next one): each ends in
/// a clean shutdown with exit code 0.
#[test]
fn signals_at_any_moment_shut_down_cleanly() {
    let dir = std::env::temp_dir().join(format!("plexus-cli-sig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("s.key");
    let args = [
        "--key-file",
        key.to_str().unwrap(),
        "--listen",
        "quic://127.0.0.1:0",
        "--status-every",
        "1",
    ];
    for sig in ["-INT", "-TERM"] {
        let p = Proc::start(&args);
        p.expect("the node id", |l| l.starts_with("node id "));
        assert_eq!(p.stop_with(sig), 0, "{sig} right after the first line");
    }
    let p = Proc::start(&args);
    p.expect("a status line", |l| l.starts_with("status: "));
    assert_eq!(p.interrupt_and_wait(), 0, "SIGINT after a status line");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node started with `--key-file <dir>/<name>.key` and `extra`; returns
/// it with its id and first listen address.
fn node(dir: &std::path::Path, name: &str, extra: &[&str]) -> (Proc, String, String) {
    let key = dir.join(format!("{name}.key"));
    let mut args = vec!["--key-file", key.to_str().unwrap(), "--status-every", "1"];
    args.extend_from_slice(extra);
    let p = Proc::start(&args);
    let id = p
        .expect("the node id", |l| l.starts_with("node id "))
        .trim_start_matches("node id ")
        .to_string();
    let addr = p
        .expect("the address", |l| l.starts_with("listening on "))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    (p, id, addr)
}

use procs::temp_dir;

/// A node that listens on TCP alone still dials a QUIC seed.
#[test]
fn a_tcp_only_node_joins_through_a_quic_seed() {
    let dir = temp_dir("dial");
    let (a, id_a, addr_a) = node(&dir, "a", &["--listen", "quic://127.0.0.1:0"]);
    let seed = format!("{id_a}@{addr_a}");
    let (b, _, _) = node(
        &dir,
        "b",
        &["--listen", "tcp://127.0.0.1:0", "--seed", &seed],
    );
    b.expect("the connection", |l| {
        l.starts_with(&format!("connected to {id_a}"))
    });
    assert_eq!(b.interrupt_and_wait(), 0);
    assert_eq!(a.interrupt_and_wait(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A seed that refuses us says why, in an event line and in every status
/// line: another network key, or another identity at the address.
#[test]
fn a_refused_seed_says_why() {
    let dir = temp_dir("refused");
    let (a, id_a, addr_a) = node(
        &dir,
        "a",
        &["--listen", "quic://127.0.0.1:0", "--network-key", "alpha"],
    );
    let seed = format!("{id_a}@{addr_a}");
    let (b, _, _) = node(
        &dir,
        "b",
        &[
            "--listen",
            "quic://127.0.0.1:0",
            "--network-key",
            "beta",
            "--seed",
            &seed,
        ],
    );
    b.expect("the refusal", |l| {
        l.starts_with(&format!(
            "cannot connect to {id_a} at {addr_a}: refused: network key mismatch"
        ))
    });
    b.expect("the refusal in the status", |l| {
        l.starts_with("status: 0 connection(s)")
            && l.contains(&format!(
                "seed {id_a} at {addr_a} not connected: refused: network key mismatch"
            ))
    });
    assert_eq!(b.interrupt_and_wait(), 0);

    let wrong = format!(
        "{:016x}@{addr_a}",
        u64::from_str_radix(&id_a, 16).unwrap() ^ 1
    );
    let (c, _, _) = node(
        &dir,
        "c",
        &[
            "--listen",
            "quic://127.0.0.1:0",
            "--network-key",
            "alpha",
            "--seed",
            &wrong,
        ],
    );
    c.expect("the identity mismatch", |l| {
        l.contains("cannot connect to")
            && l.contains(&format!("identity mismatch: dialled {}", &wrong[..16]))
            && l.contains(&format!("remote is {id_a}"))
    });
    assert_eq!(c.interrupt_and_wait(), 0);
    assert_eq!(a.interrupt_and_wait(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three nodes with membership, broadcast and pubsub: a line typed on one
/// is delivered on the others, by broadcast and by pubsub.
#[test]
fn three_nodes_broadcast_publish_and_share_a_map_as_typed() {
    let dir = temp_dir("overlay");
    let stack = "ping,membership,broadcast,pubsub,gossip";
    let (mut a, id_a, addr_a) = node(
        &dir,
        "a",
        &[
            "--listen",
            "quic://127.0.0.1:0",
            "--behaviours",
            stack,
            "--subscribe",
            "news",
        ],
    );
    let seed = format!("{id_a}@{addr_a}");
    let joiner = |name: &str| {
        node(
            &dir,
            name,
            &[
                "--listen",
                "quic://127.0.0.1:0",
                "--behaviours",
                stack,
                "--subscribe",
                "news",
                "--seed",
                &seed,
            ],
        )
    };
    let (b, _, _) = joiner("b");
    let (mut c, _, _) = joiner("c");
    for p in [&b, &c] {
        p.expect("the connection", |l| {
            l.starts_with(&format!("connected to {id_a}"))
        });
    }
    a.type_line("broadcast hello everyone");
    a.type_line("publish news extra extra");
    a.type_line("set motd hi there");
    a.type_line("incr visits 2");
    // The four arrive in any order: each behaviour has its own path.
    let kind = |l: &str| {
        if l.starts_with(&format!("broadcast from {id_a} ")) && l.ends_with(": hello everyone") {
            Some("the broadcast")
        } else if l.starts_with(&format!("news from {id_a} ")) && l.ends_with(": extra extra") {
            Some("the publication")
        } else if l == "motd = hi there" {
            Some("the register")
        } else if l == "visits = 2" {
            Some("the counter")
        } else {
            None
        }
    };
    for p in [&b, &c] {
        let mut missing: std::collections::BTreeSet<&str> = [
            "the broadcast",
            "the publication",
            "the register",
            "the counter",
        ]
        .into();
        while !missing.is_empty() {
            let what = format!("{missing:?}");
            let line = p.expect(&what, |l| kind(l).is_some_and(|k| missing.contains(k)));
            missing.remove(kind(&line).expect("matched"));
        }
    }
    c.type_line("incr visits nine");
    c.expect("the refusal", |l| {
        l.contains("\"nine\" is not a whole number")
    });
    for p in [a, b, c] {
        assert_eq!(p.interrupt_and_wait(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three nodes with the router and kv: a record put on one is read on
/// another, deleted on the third, and gone.
#[test]
fn three_nodes_put_get_and_delete_through_the_kv_store() {
    let dir = temp_dir("kv");
    let stack = "ping,router,membership,kv";
    let common = ["--listen", "quic://127.0.0.1:0", "--behaviours", stack];
    let (mut a, id_a, addr_a) = node(&dir, "a", &common);
    let seed = format!("{id_a}@{addr_a}");
    let joiner = |name: &str| {
        let mut args = common.to_vec();
        args.extend(["--seed", &seed]);
        node(&dir, name, &args)
    };
    let (mut b, _, _) = joiner("b");
    let (mut c, _, _) = joiner("c");
    // Every router reaches both others before the first put.
    for p in [&a, &b, &c] {
        p.expect("routes to both others", |l| {
            l.starts_with("status:") && l.ends_with(", 2 route(s)")
        });
    }
    a.type_line("put greeting hello world");
    a.expect("the put acknowledged", |l| {
        l.starts_with("greeting: stored on ")
    });
    c.type_line("get greeting");
    c.expect("the value", |l| l == "greeting = hello world");
    b.type_line("delete greeting");
    b.expect("the delete acknowledged", |l| {
        l.starts_with("greeting: stored on ")
    });
    c.type_line("get greeting");
    c.expect("the key gone", |l| l == "greeting: not found");
    a.type_line("put");
    a.expect("the usage", |l| l.starts_with("put: usage: put <key>"));
    for p in [a, b, c] {
        assert_eq!(p.interrupt_and_wait(), 0);
    }
}
