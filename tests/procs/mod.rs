//! Example binaries run as a user runs them, for the CLI tests: start one,
//! read the lines it prints (waiting on each, never sleeping), type into
//! it, signal it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for any one line: generous, it only fails tests.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The example binary `name`. `cargo test` builds the examples, so it sits
/// next to the test binary: target/<profile>/deps/<test>-… →
/// target/<profile>/examples/<name>.
pub(crate) fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A running example and the lines it prints.
pub(crate) struct Proc {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts example `name` with `args`; stdin is a pipe ([`Proc::type_line`]).
    pub(crate) fn start(name: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(example_bin(name))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the examples are built by cargo test");
        let out = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
        }
    }

    /// The first printed line `f` accepts, waiting at most [`WAIT`].
    pub(crate) fn expect(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if f(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line with {what}: {e}"),
            }
        }
    }

    /// The lines printed so far and not yet read, without waiting.
    pub(crate) fn printed(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Types `line` (and Enter).
    pub(crate) fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("the process reads its input");
        stdin.flush().expect("flushed");
    }

    /// Closes stdin (end of input).
    pub(crate) fn close_input(&mut self) {
        self.stdin = None;
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig} failed");
    }

    /// Waits for the process to exit; its exit code.
    pub(crate) fn wait(mut self) -> i32 {
        self.child.wait().expect("exits").code().unwrap_or(-1)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed test must not leave a process running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory for one test's key files.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plexus-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
