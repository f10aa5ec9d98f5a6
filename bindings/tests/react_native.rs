//! The React Native module (react-native-module/) against this build's library:
//! 1. the committed TurboModule sources (C++, Android/iOS glue, TypeScript bindings) equal
//!    what uniffi-bindgen-react-native generates from the library (scripts/generate.sh
//!    --check);
//! 2. the package's TypeScript, with the N-API flavour of the bindings, passes its vitest
//!    suites on Node against the real core and a relay started here;
//! 3. `tsc --noEmit` (strict) passes for the module and the example app.
//!
//! Tools (installed by scripts/setup.sh): the npm packages of react-native-module and
//! examples/react-native-app, and the `ubrn` CLI built by
//! react-native-module/scripts/build-ubrn.sh. Without them the test is skipped with a
//! notice, unless PRIVCOMM_REQUIRE_FOREIGN_TESTS=1 (scripts/test.sh sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ffi_library, repo_root, run, tool_check, TestRelay};

fn module_dir() -> PathBuf {
    repo_root().join("react-native-module")
}

fn app_dir() -> PathBuf {
    repo_root().join("examples/react-native-app")
}

fn find_tools() -> Result<(), String> {
    let module = module_dir();
    let required: [(&str, PathBuf); 4] = [
        (
            "npm packages of react-native-module",
            module.join("node_modules/.bin/vitest"),
        ),
        ("TypeScript", module.join("node_modules/.bin/tsc")),
        (
            "the ubrn CLI (react-native-module/scripts/build-ubrn.sh)",
            module.join(
                "node_modules/uniffi-bindgen-react-native/target/debug/uniffi-bindgen-react-native",
            ),
        ),
        (
            "npm packages of examples/react-native-app",
            app_dir().join("node_modules"),
        ),
    ];
    for (what, path) in required {
        if !path.exists() {
            return Err(format!("{what} not found at {}", path.display()));
        }
    }
    Ok(())
}

fn script(dir: &Path, name: &str) -> Command {
    let mut command = Command::new("bash");
    command.arg(dir.join("scripts").join(name)).current_dir(dir);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_native_module_passes_its_checks_and_tests() {
    if !tool_check("React Native module tests", find_tools()) {
        return;
    }
    let module = module_dir();
    let library = ffi_library();

    let (check_module, check_lib) = (module.clone(), library.clone());
    tokio::task::spawn_blocking(move || {
        run(
            script(&check_module, "generate.sh")
                .arg("--check")
                .arg(&check_lib),
            "the TurboModule sources check",
        );
        run(
            script(&check_module, "generate-napi.sh").arg(&check_lib),
            "generating the N-API bindings",
        );
    })
    .await
    .expect("generation ran");

    let relay = TestRelay::start().await;
    let (test_module, relay_url, codes_url) =
        (module.clone(), relay.url.clone(), relay.codes.codes_url());
    tokio::task::spawn_blocking(move || {
        run(
            Command::new(test_module.join("node_modules/.bin/vitest"))
                .args(["run", "--reporter=verbose"])
                .env("PRIVCOMM_RELAY_URL", relay_url)
                .env("PRIVCOMM_CODES_URL", codes_url)
                .env("NO_COLOR", "1")
                .current_dir(&test_module),
            "the vitest suites",
        );
    })
    .await
    .expect("vitest ran");
    relay.stop().await;

    tokio::task::spawn_blocking(move || {
        for dir in [module_dir(), app_dir()] {
            run(
                Command::new(module.join("node_modules/.bin/tsc"))
                    .args(["--noEmit", "-p", "tsconfig.json"])
                    .current_dir(&dir),
                &format!("tsc --noEmit in {}", dir.display()),
            );
        }
    })
    .await
    .expect("tsc ran");
}
