//! profiler's root-only runtime folder (/run/profiler: private folders for files handed to
//! engines, the kallsyms cache) is checked before it is trusted: a loose one of root's is
//! tightened, one another user owns is refused. A test binary of its own: it changes a
//! host-wide folder, and cargo runs test binaries one after the other.
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use integration_tests::*;

const RUNTIME_DIR: &str = "/run/profiler";

/// Puts the folder back as profiler makes it, however the test ends.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::os::unix::fs::chown(RUNTIME_DIR, Some(0), Some(0));
        let _ = std::fs::set_permissions(RUNTIME_DIR, std::fs::Permissions::from_mode(0o700));
    }
}

fn nobody() -> u32 {
    let o = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

privileged_test!(
    #[scratch = "runtime-dir"]
    fn a_loose_runtime_folder_is_tightened_and_a_foreign_one_refused(dir: TempDir) {
        let _restore = Restore;
        std::fs::create_dir_all(RUNTIME_DIR).unwrap();
        // Containers mode writes the recording seccomp profile in a private folder there.
        let record = |out: &Path| {
            profiler()
                .args(["record", "-q", "--containers", "--out"])
                .arg(out)
                .args([
                    "--",
                    "/bin/sh",
                    "-c",
                    "test -r \"$PROFILER_RECORDING_SECCOMP\"",
                ])
                .output()
                .unwrap()
        };
        std::fs::set_permissions(RUNTIME_DIR, std::fs::Permissions::from_mode(0o777)).unwrap();
        let o = record(&dir.join("a"));
        let mode = std::fs::metadata(RUNTIME_DIR).unwrap().mode() & 0o777;
        assert_eq!(
            mode,
            0o700,
            "not tightened: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::os::unix::fs::chown(RUNTIME_DIR, Some(nobody()), None).unwrap();
        let o = record(&dir.join("b"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(
            err.contains("refusing to keep private files there"),
            "{err}"
        );
        assert_eq!(std::fs::metadata(RUNTIME_DIR).unwrap().uid(), nobody());
    }
);
