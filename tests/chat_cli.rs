//! The `chat` example as the README runs it: three processes, each line
//! typed on one printed on the other two as `<author>: <line>`; `/peers`
//! lists overlay neighbours; `/quit` leaves.

// Real processes on real time: the clock is the point here.
#![allow(clippy::disallowed_methods)]

mod procs;

use procs::Proc;

/// A chat process; its id and the `--seed` that joins it.
fn chat(extra: &[&str]) -> (Proc, String, String) {
    let mut args = vec!["--listen", "quic://127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = Proc::start("chat", &args);
    let id = p
        .expect("who we are", |l| l.starts_with("chat: you are "))
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(',')
        .to_string();
    let seed = p
        .expect("the seed", |l| {
            l.starts_with("chat: others join with --seed ")
        })
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    (p, id, seed)
}

#[test]
fn three_chat_processes_see_each_others_lines() {
    let (mut a, id_a, seed_a) = chat(&[]);
    let (mut b, id_b, seed_b) = chat(&["--seed", &seed_a]);
    // C joins through B: A's lines reach it over the overlay, not a
    // direct seed.
    let (mut c, id_c, _) = chat(&["--seed", &seed_b]);
    a.type_line("hello from a");
    for p in [&b, &c] {
        p.expect("a's line", |l| {
            l == format!("{id_a}: hello from a") || l == format!("~{id_a}: hello from a")
        });
    }
    c.type_line("c here");
    for p in [&a, &b] {
        p.expect("c's line", |l| l.ends_with(&format!("{id_c}: c here")));
    }
    b.type_line("and b");
    for p in [&a, &c] {
        p.expect("b's line", |l| l.ends_with(&format!("{id_b}: and b")));
    }
    // Nobody prints their own line back, and each line arrives once: the
    // next line after b's on a is c's next one.
    c.type_line("second from c");
    a.expect("c's second line", |l| {
        assert!(
            !l.contains("and b") && !l.contains("hello from a"),
            "a repeated line: {l}"
        );
        l.ends_with(&format!("{id_c}: second from c"))
    });
    b.type_line("/peers");
    b.expect("b's neighbours", |l| {
        l.starts_with("peers: ") && l.contains(&id_a)
    });
    for p in [&mut a, &mut b, &mut c] {
        p.type_line("/quit");
    }
    for p in [a, b, c] {
        assert_eq!(p.wait(), 0);
    }
}

#[test]
fn a_bad_flag_or_command_says_what_is_wrong() {
    let out = std::process::Command::new(procs::example_bin("chat"))
        .args(["--seed", "nonsense"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not <node-id>@<address>"));
    let (mut a, _, _) = chat(&[]);
    a.type_line("/shout hi");
    a.expect("the complaint", |l| {
        l.starts_with("chat: unknown command \"/shout hi\"")
    });
    a.close_input();
    assert_eq!(a.wait(), 0, "end of input leaves");
}
