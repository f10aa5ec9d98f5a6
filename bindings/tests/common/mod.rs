//! Helpers of the bindings' foreign-language tests: the library under test, a relay,
//! running tools.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bindings/ has a parent")
        .to_owned()
}

/// The cdylib cargo built with this test binary. `cargo test` leaves it in deps/ (it is
/// not uplifted), which is also where it is fresh: target/<profile>/ may hold an older one
/// from a `cargo build` with other features.
pub fn ffi_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    let name = format!(
        "{}privcomm_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    [deps, deps.parent().expect("profile dir")]
        .iter()
        .map(|dir| dir.join(&name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{name} not found next to {}", exe.display()))
}

/// Every file under `dir`, by relative path.
pub fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root").to_owned();
                out.insert(rel, std::fs::read(&path).expect("readable"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs `command`, printing its output, and fails the test when it fails.
pub fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "{what} failed ({})", output.status);
}

/// Whether a missing tool fails the test (scripts/test.sh) or skips it with a notice.
pub fn tools_required() -> bool {
    std::env::var_os("PRIVCOMM_REQUIRE_FOREIGN_TESTS").is_some()
}

/// Skips (returns false) or fails when `missing` names a tool that is not installed.
pub fn tool_check(suite: &str, missing: Result<(), String>) -> bool {
    match missing {
        Ok(()) => true,
        Err(missing) if tools_required() => panic!("{missing}: run scripts/setup.sh"),
        Err(missing) => {
            eprintln!("SKIPPED the {suite}: {missing} (scripts/setup.sh installs it)");
            false
        }
    }
}

/// A relay on an ephemeral loopback port with SQLite in a temporary directory and limits
/// loose enough for many test accounts.
pub struct TestRelay {
    pub server: privcomm_server::RelayServer,
    pub url: String,
    /// Where the relay texts its verification codes; the foreign tests read them at
    /// `GET <codes.codes_url()>/codes/{number}`.
    pub codes: privcomm_server::codes::inbox::CodeInbox,
    _dir: tempfile::TempDir,
}

impl TestRelay {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = privcomm_server::Config::with_defaults(dir.path());
        config.bind = "127.0.0.1:0".parse().expect("address");
        config.register_per_hour = 10_000;
        config.token_per_minute = 10_000;
        config.challenge_per_minute = 10_000;
        // Tests send bursts no person would; the per-account rate has tests of its own.
        config.send_per_minute = 1_000_000;
        config.send_kib_per_minute = 100_000_000;
        // Many test users fetch the same user's bundle within the hour.
        config.prekeys_per_target_per_hour = 100_000;
        config.key_lookups_per_hour = 100_000;
        config.verification_per_hour = 10_000;
        config.verification_per_number_per_minute = 1_000;
        config.verification_per_number_per_day = 1_000;
        let codes = privcomm_server::codes::inbox::CodeInbox::start()
            .await
            .expect("code inbox");
        codes.configure(&mut config);
        let server =
            privcomm_server::RelayServer::start(config, Arc::new(privcomm_server::SystemClock))
                .await
                .expect("relay starts");
        let url = format!("http://{}", server.local_addr());
        Self {
            server,
            url,
            codes,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        let _ = self.server.shutdown().await;
    }
}
