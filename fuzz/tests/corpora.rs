//! Replays every committed corpus through its fuzz target's binary, each input once
//! (libFuzzer's `-runs=0`), so the targets keep building and every input that once found
//! something keeps passing. Built by the stable test build, the binaries are not
//! instrumented: this replays, it does not fuzz (README.md says how to fuzz).

use std::path::Path;
use std::process::Command;

fn replay(target: &str, binary: &str) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let files = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .count();
    assert!(files > 0, "{target}: empty corpus");
    let output = Command::new(binary)
        .arg("-runs=0")
        .arg(&corpus)
        .output()
        .expect("run the target");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{target} failed on its corpus:\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    // libFuzzer says how many inputs it read: all of them ran.
    let read: usize = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("INFO:")?
                .split_once("files found")?
                .0
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{target}: no file count in:\n{log}"));
    assert_eq!(read, files, "{target}");
}

macro_rules! corpus_tests {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target), env!(concat!("CARGO_BIN_EXE_", stringify!($target))));
        }
    )*};
}

corpus_tests!(
    relay_frame,
    rest_answer,
    ciphertext,
    envelope,
    padding,
    peer_sdp,
    tampered_store,
    app_input,
    rest_body,
    client_frame,
    access_token,
    signed_string,
);
