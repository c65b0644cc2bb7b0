//! Builds `profiler-ebpf` for the bpf target (nightly + bpf-linker, see `cargo xtask setup`)
//! and leaves the object in OUT_DIR, where `src/probes.rs` embeds it. `AYA_BUILD_SKIP=1`
//! skips it (e.g. for `cargo check` on a machine without the eBPF toolchain).
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("profiler crate has no parent directory"))?
        .join("profiler-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    // Make sure an object exists even when skipping, so include_bytes_aligned! compiles.
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("profiler");
        if !out.exists() {
            std::fs::write(&out, b"")?;
        }
    }
    aya_build::build_ebpf(
        [Package {
            name: "profiler-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
