//! The contract check of `integration-app/` against the published Membrane
//! SDK (`integration-app/contract/check.mjs`): it passes on the shipped
//! elements and fails on a broken one.
//!
//! It needs Node and the checker's dependencies (`npm ci` in
//! `integration-app/contract`, as `scripts/test.sh` does). Without them the
//! tests say so and pass, unless `MEMBRANE_CONTRACT=required`, which makes
//! their absence a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn elements() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration-app")
}

fn contract_dir() -> PathBuf {
    elements().join("contract")
}

/// Whether the checker can run here; panics when it must and cannot.
fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let deps = contract_dir()
        .join("node_modules/@membranehq/sdk/package.json")
        .is_file();
    if node && deps {
        return true;
    }
    let why = if node {
        "run `npm ci` in integration-app/contract"
    } else {
        "node is not installed"
    };
    assert!(
        std::env::var("MEMBRANE_CONTRACT").as_deref() != Ok("required"),
        "the Membrane contract check cannot run: {why}"
    );
    eprintln!("skipping the Membrane contract check: {why}");
    false
}

fn check(args: &[&str]) -> Output {
    Command::new("node")
        .arg(contract_dir().join("check.mjs"))
        .args(args)
        .output()
        .expect("running node")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn shipped_elements_match_the_published_sdk() {
    if !available() {
        return;
    }
    let out = check(&[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_self_test_refuses_every_deliberate_defect() {
    if !available() {
        return;
    }
    let out = check(&["--self-test"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("defects refused"), "{}", text(&out));
}

#[test]
fn a_broken_element_fails_the_check_and_is_named() {
    if !available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("contract-{}", std::process::id()));
    copy_dir(&elements(), &dir);
    let rel = "integrations/pipedrive/field-mappings/contacts/spec.yaml";
    let path = dir.join(rel);
    let spec = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, spec.replace("direction: both", "direction: two-way")).unwrap();
    let out = check(&["--root", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !out.status.success(),
        "a broken element passed:\n{}",
        text(&out)
    );
    let report = text(&out);
    assert!(
        report.contains(rel) && report.contains("direction"),
        "{report}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "contract" || name == "node_modules" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
