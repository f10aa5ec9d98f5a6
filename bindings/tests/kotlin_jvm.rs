//! The Kotlin bindings on the JVM: checks that the committed Kotlin and Swift match this
//! build's library, then compiles the committed Kotlin with the Kotlin JUnit tests
//! (android/src/test/kotlin) and runs them against `libprivcomm_ffi` and a relay started
//! here on an ephemeral loopback port.
//!
//! Tools (installed by scripts/setup.sh): kotlinc from npm `kotlin-compiler` in
//! android/jvm-test, JNA and the JUnit 5 console launcher from Debian. Without them the JVM
//! test is skipped with a notice, unless PRIVCOMM_REQUIRE_FOREIGN_TESTS=1 (scripts/test.sh
//! sets it) makes their absence a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use camino::Utf8PathBuf;
use common::{ffi_library, read_tree, repo_root, run, tool_check, TestRelay};

fn generate(language: uniffi::TargetLanguage, out_dir: &Path) {
    let root = repo_root();
    uniffi::generate(uniffi::GenerateOptions {
        languages: vec![language],
        source: Utf8PathBuf::from_path_buf(ffi_library()).expect("utf-8 path"),
        out_dir: Utf8PathBuf::from_path_buf(out_dir.to_owned()).expect("utf-8 path"),
        config_override: Some(
            Utf8PathBuf::from_path_buf(root.join("bindings/uniffi.toml")).expect("utf-8 path"),
        ),
        format: false,
        crate_filter: None,
        metadata_no_deps: true,
    })
    .expect("uniffi generates the bindings");
}

#[test]
fn committed_bindings_match_the_library() {
    let root = repo_root();
    let cases = [
        (
            uniffi::TargetLanguage::Kotlin,
            "org/privcomm/core",
            root.join("android/src/main/kotlin/org/privcomm/core"),
        ),
        (
            uniffi::TargetLanguage::Swift,
            "",
            root.join("bindings/swift"),
        ),
    ];
    for (language, sub, committed) in cases {
        let out = tempfile::tempdir().expect("temp dir");
        generate(language.clone(), out.path());
        let fresh = read_tree(&out.path().join(sub));
        assert!(!fresh.is_empty(), "{language:?}: nothing generated");
        let stored = read_tree(&committed);
        assert!(
            fresh == stored,
            "the committed {language:?} bindings in {} do not match the library: run \
             scripts/generate-bindings.sh and commit the result (files: generated {:?}, \
             committed {:?})",
            committed.display(),
            fresh.keys().collect::<Vec<_>>(),
            stored.keys().collect::<Vec<_>>(),
        );
    }
}

/// Where the JVM tools are, or why they are missing.
struct JvmTools {
    kotlinc: PathBuf,
    kotlin_lib: PathBuf,
    jna: PathBuf,
    junit: PathBuf,
}

fn find_tools() -> Result<JvmTools, String> {
    let root = repo_root();
    let kotlinc = std::env::var_os("KOTLINC")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("android/jvm-test/node_modules/kotlin-compiler/bin/kotlinc"));
    let kotlin_lib = kotlinc
        .parent()
        .and_then(Path::parent)
        .map(|home| home.join("lib"))
        .unwrap_or_default();
    let jna = std::env::var_os("JNA_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/share/java/jna.jar".into());
    let junit = std::env::var_os("JUNIT_CONSOLE_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/share/java/junit-platform-console-standalone.jar".into());
    for (what, path) in [
        ("kotlinc (npm kotlin-compiler)", &kotlinc),
        (
            "kotlinx-coroutines",
            &kotlin_lib.join("kotlinx-coroutines-core-jvm.jar"),
        ),
        ("JNA (Debian libjna-java)", &jna),
        ("JUnit 5 console launcher (Debian junit5)", &junit),
    ] {
        if !path.exists() {
            return Err(format!("{what} not found at {}", path.display()));
        }
    }
    Ok(JvmTools {
        kotlinc,
        kotlin_lib,
        jna,
        junit,
    })
}

/// The Kotlin sources under `dir` that compile on a plain JVM: those importing `android.*`
/// (the Keystore source) need the Android SDK.
fn jvm_kotlin_files(dir: &Path) -> Vec<PathBuf> {
    read_tree(dir)
        .into_iter()
        .filter(|(path, text)| {
            path.extension().is_some_and(|e| e == "kt")
                && !String::from_utf8_lossy(text).contains("\nimport android.")
        })
        .map(|(path, _)| dir.join(path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kotlin_tests_pass_on_the_jvm() {
    let tools = find_tools();
    if !tool_check(
        "Kotlin JVM tests",
        tools.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let tools = tools.expect("checked");
    let relay = TestRelay::start().await;
    let relay_url = relay.url.clone();
    let codes_url = relay.codes.codes_url();

    let root = repo_root();
    let classes = tempfile::tempdir().expect("temp dir");
    let mut sources = jvm_kotlin_files(&root.join("android/src/main/kotlin"));
    sources.extend(jvm_kotlin_files(&root.join("android/src/test/kotlin")));
    let lib = tools.kotlin_lib.clone();
    let compile_cp = std::env::join_paths([
        tools.jna.clone(),
        tools.junit.clone(),
        lib.join("kotlinx-coroutines-core-jvm.jar"),
    ])
    .expect("classpath");
    let classes_dir = classes.path().to_owned();
    let kotlinc = tools.kotlinc.clone();
    tokio::task::spawn_blocking(move || {
        run(
            Command::new(kotlinc)
                .args(["-jvm-target", "17", "-nowarn", "-d"])
                .arg(&classes_dir)
                .arg("-cp")
                .arg(&compile_cp)
                .args(&sources),
            "kotlinc",
        )
    })
    .await
    .expect("kotlinc ran");

    let run_cp = std::env::join_paths([
        classes.path().to_owned(),
        root.join("android/src/test/resources"),
        tools.jna.clone(),
        lib.join("kotlin-stdlib.jar"),
        lib.join("kotlinx-coroutines-core-jvm.jar"),
    ])
    .expect("classpath");
    let library = ffi_library();
    let junit = tools.junit.clone();
    let junit_cp = run_cp.clone();
    tokio::task::spawn_blocking(move || {
        run(
            Command::new("java")
                .arg(format!("-Dprivcomm.relay={relay_url}"))
                .arg(format!("-Dprivcomm.codes={codes_url}"))
                .arg(format!(
                    "-Duniffi.component.privcomm.libraryOverride={}",
                    library.display()
                ))
                .arg("-jar")
                .arg(junit)
                .arg("--class-path")
                .arg(&junit_cp)
                .args([
                    "--select-package",
                    "org.privcomm",
                    "--fail-if-no-tests",
                    "--disable-banner",
                    "--disable-ansi-colors",
                    "--details=tree",
                    // Full stack traces down to the failing test line.
                    "--config=junit.platform.stacktrace.pruning.enabled=false",
                ]),
            "the Kotlin JUnit tests",
        )
    })
    .await
    .expect("junit ran");

    // A JVM that exits without `shutdown()` (listeners subscribed, messages in flight)
    // must exit cleanly, every time.
    for attempt in 0..3 {
        let mut command = Command::new("java");
        command
            .arg(format!("-Dprivcomm.relay={}", relay.url))
            .arg(format!("-Dprivcomm.codes={}", relay.codes.codes_url()))
            .arg(format!(
                "-Duniffi.component.privcomm.libraryOverride={}",
                ffi_library().display()
            ))
            .arg("-cp")
            .arg(&run_cp)
            .arg("org.privcomm.core.ExitWithoutShutdownKt");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("java ran")
            .expect("java runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("exiting without shutdown"),
            "run {attempt}: exit {:?}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    relay.stop().await;
}
