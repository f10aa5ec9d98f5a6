//! The README's demo command, run as part of the test suite: the `demo` binary must finish
//! successfully (it checks its own outcomes and exits non-zero on any failure).

#[test]
fn the_readme_demo_runs_to_completion() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .expect("the demo binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("bob      hears a 440 Hz tone"), "{stdout}");
    assert!(
        stdout.contains("done     everything delivered, nothing lost"),
        "{stdout}"
    );
}
