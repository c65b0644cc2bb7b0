//! Kernel addresses hidden (kernel.kptr_restrict=2): capability checks cannot be told
//! audited or unaudited from their kernel stacks. profiler says so, adds nothing it would
//! have to guess (a guess puts CAP_SYS_ADMIN in every whitelist), reports lost data, and
//! writes no raw kernel address into trace.json.
//!
//! A test binary of its own: the sysctl is host-wide, and cargo runs test binaries one after
//! the other, so no other recording sees it.
use integration_tests::*;

const SYSCTL: &str = "/proc/sys/kernel/kptr_restrict";
const CACHE: &str = "/run/profiler/kallsyms.cache";

struct Restore(String);
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

privileged_test!(
    fn hidden_kernel_addresses_are_reported_not_guessed() {
        let before = std::fs::read_to_string(SYSCTL).unwrap();
        let _restore = Restore(before.clone());
        std::fs::write(SYSCTL, "2").unwrap();
        // The cache from an earlier run would still symbolise: without it, nothing can.
        let _ = std::fs::remove_file(CACHE);
        let dir = TempDir::new("kptr");
        let out = dir.join("p");
        let script = format!("touch {0}; chown 1 {0}", dir.join("f").display());
        let o = profiler()
            .args(["record", "--out"])
            .arg(&out)
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .unwrap();
        drop(_restore);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains("kernel addresses are hidden"), "{err}");
        let caps = read_json(&out.join("capabilities.json"));
        let add = caps["add"].as_array().unwrap();
        assert!(
            !add.iter().any(|c| c == "CAP_SYS_ADMIN"),
            "guessed CAP_SYS_ADMIN: {caps:#}"
        );
        assert!(
            caps["unclassified"]
                .as_object()
                .is_some_and(|u| !u.is_empty()),
            "{caps:#}"
        );
        let trace = std::fs::read_to_string(out.join("trace.json")).unwrap();
        assert!(
            !trace.contains("0xffff"),
            "raw kernel addresses in trace.json"
        );
    }
);
