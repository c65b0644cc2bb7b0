use which::which;

/// Rebuild the eBPF object when bpf-linker changes (it is the linker for the bpf target).
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found in PATH; run `cargo xtask setup` to install it"
        ),
    }
}
