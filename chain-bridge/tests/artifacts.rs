//! The committed build JSON is what the pinned solc makes of the committed sources and
//! standard-JSON input: recompiling must give the same bytes, and any drift fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chain_bridge::EVM_VERSION;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run_check(root: &Path) -> Output {
    Command::new("node")
        .arg(root.join("scripts/compile.mjs"))
        .arg("--check")
        .output()
        .expect("node runs (apt-get install nodejs npm; then make chain-tools)")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A copy of the chain-bridge's compile inputs and outputs, sharing its node_modules.
fn copy_of_the_toolchain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["scripts", "contracts", "contracts/build"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for entry in std::fs::read_dir(crate_dir().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, root.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    std::os::unix::fs::symlink(crate_dir().join("node_modules"), root.join("node_modules")).unwrap();
    dir
}

fn edit(path: PathBuf, from: &str, to: &str) {
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn recompiling_the_committed_input_gives_the_committed_build() {
    let output = run_check(crate_dir());
    assert!(output.status.success(), "the committed build is stale: {}", describe(&output));
}

#[test]
fn the_check_fails_when_the_build_json_drifts() {
    let dir = copy_of_the_toolchain();
    assert!(run_check(dir.path()).status.success());
    edit(dir.path().join("contracts/build/LedgerAnchor.json"), "\"bytecode\": \"0x6", "\"bytecode\": \"0x7");
    let output = run_check(dir.path());
    assert!(!output.status.success(), "a tampered build passed: {}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("contracts/build/LedgerAnchor.json"));
}

#[test]
fn the_check_fails_when_a_contract_source_changes_without_a_rebuild() {
    let dir = copy_of_the_toolchain();
    edit(
        dir.path().join("contracts/CarbonStaking.sol"),
        "error ZeroAmount();",
        "error ZeroAmount();\n    error Unused();",
    );
    let output = run_check(dir.path());
    assert!(!output.status.success(), "a changed source passed: {}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("standard-input.json"), "{stderr}");
}

#[test]
fn the_contracts_target_the_pinned_evm_version() {
    let input: serde_json::Value =
        serde_json::from_slice(&std::fs::read(crate_dir().join("contracts/standard-input.json")).unwrap()).unwrap();
    assert_eq!(input["settings"]["evmVersion"], EVM_VERSION);
    for name in ["CarbonToken", "CarbonStaking", "LedgerAnchor"] {
        let path = crate_dir().join(format!("contracts/build/{name}.json"));
        let artifact: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(artifact["evmVersion"], EVM_VERSION, "{name}");
        assert_eq!(artifact["contractName"], name);
    }
}
