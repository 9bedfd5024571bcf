//! Records the git revision the binary was built from (for `run.json`).

use std::process::Command;

fn main() {
    let rev = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    println!(
        "cargo:rustc-env=MESHSIM_GIT_REV={rev}{}",
        if dirty { "-dirty" } else { "" }
    );
    // The shipped xDS size table, embedded so the binary needs no file at run time. Generated
    // by `meshsim calibrate xds`; an absent file embeds nothing and mesh runs report it.
    let sizes = std::path::Path::new("../models/xds-sizes.toml");
    println!("cargo:rerun-if-changed=../models/xds-sizes.toml");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let text = std::fs::read_to_string(sizes).unwrap_or_default();
    std::fs::write(out.join("xds-sizes.toml"), text).expect("writing OUT_DIR/xds-sizes.toml");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/index");
}
