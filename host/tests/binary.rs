//! The `sluice` binary's own command line, without plugins or servers.
//!
//! Having an integration test here also makes `cargo test` build the
//! binary with the same dependency features as every other test, so
//! `scripts/setup` and `scripts/test` share one build of the dependencies.

use std::process::Command;

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("the sluice binary runs")
}

#[test]
fn version_names_the_package_version() {
    let output = sluice(&["--version"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn missing_subcommand_is_a_usage_error() {
    let output = sluice(&[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("Usage: sluice"), "{stderr}");
}

#[test]
fn run_without_files_is_a_usage_error() {
    let output = sluice(&["run", "--endpoint", "http://127.0.0.1:9"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("<FILE>"), "{stderr}");
}
