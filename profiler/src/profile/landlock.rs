//! `landlock.json`: the image profile's Landlock rules (see `confine::landlock` for what
//! they hold a workload to), and where the sealing entrypoint that applies them inside a
//! container is found. The rules are written for containers only: a command that profiler
//! starts itself gets them straight from the image profile.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use profiler_seal::Rules;
pub use profiler_seal::rules::RULES_FILE;

use crate::profile::image_profile::ImageProfile;

/// Where the sealing binary and its rules are mounted in a container (read-only).
pub const SEAL_DIR: &str = "/.profiler-seal";
pub const SEAL_BINARY_NAME: &str = "profiler-seal";
/// Names the sealing binary to use instead of the one found next to profiler.
pub const ENV_SEAL_BINARY: &str = "PROFILER_SEAL";

/// Why a profile has no sealed variant: it was not recorded from a container (said in no
/// run file, since there is nothing to seal).
pub const NOT_A_CONTAINER: &str = "not a container recording";

/// The host paths a sealed container mounts.
#[derive(Clone, Debug)]
pub struct Sealing {
    /// The static `profiler-seal` binary.
    pub binary: String,
    /// This profile's `landlock.json`.
    pub rules: String,
}

impl Sealing {
    pub fn entrypoint() -> String {
        format!("{SEAL_DIR}/{SEAL_BINARY_NAME}")
    }
    /// (host path, container path) of the two read-only mounts.
    pub fn mounts(&self) -> [(String, String); 2] {
        [
            (self.binary.clone(), Self::entrypoint()),
            (self.rules.clone(), format!("{SEAL_DIR}/{RULES_FILE}")),
        ]
    }
}

/// The port of a recorded address (`AF_INET 127.0.0.1:8080`, `AF_INET6 [::1]:80`).
fn port_of(address: &str) -> Option<u16> {
    let rest = address
        .strip_prefix("AF_INET ")
        .or_else(|| address.strip_prefix("AF_INET6 "))?;
    rest.rsplit(':').next()?.parse().ok().filter(|p| *p != 0)
}

/// The Landlock rules of an image profile. `command` is the container's entrypoint and
/// command, for the sealing entrypoint (empty for a command profiler starts itself).
pub fn rules(profile: &ImageProfile, entrypoint: &[String], cmd: &[String]) -> Rules {
    let mut r = Rules {
        schema: profiler_seal::rules::SCHEMA.into(),
        entrypoint: entrypoint.to_vec(),
        cmd: cmd.to_vec(),
        ..Default::default()
    };
    let mut paths: BTreeSet<&String> = profile.executables.keys().collect();
    paths.extend(profile.executable_files.keys());
    for path in paths {
        let identity = profile.executable_files.get(path);
        r.execute.push(profiler_seal::Executable {
            path: path.clone(),
            size: identity.map(|i| i.size),
            mtime: identity.map(|i| i.mtime),
            // Without a hash (the program had exited before it could be read), no drift
            // check: size and mtime alone are not evidence of a different file.
            sha256: identity.map(|i| i.sha256.clone()).filter(|h| !h.is_empty()),
        });
    }
    r.write_beneath = profile.writable_directories.iter().cloned().collect();
    // The workload's own /proc entries it wrote (oom_score_adj, its fds), never through
    // /proc/self/root or another magic link.
    let mut files = BTreeSet::new();
    for path in profile.written_paths.keys() {
        if let Some(rest) = path.strip_prefix("/proc/self/") {
            match rest.split_once('/') {
                None => files.insert("/proc/self".to_owned()),
                Some(("fd", _)) => files.insert("/proc/self/fd".to_owned()),
                // A thread's own entries: pthread_setname_np writes
                // /proc/self/task/TID/comm (glibc nptl/pthread_setname.c), and the thread
                // ids are new in every run.
                Some(("task", _)) => files.insert("/proc/self/task".to_owned()),
                _ => false,
            };
        }
    }
    r.write_files = files.into_iter().collect();
    r.bind_tcp = profile.network.bound_ports.iter().copied().collect();
    r.connect_tcp = profile
        .network
        .connected
        .iter()
        .filter_map(|a| port_of(a))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let unix_abstract = profile
        .network
        .bound
        .iter()
        .chain(profile.network.connected.iter())
        .any(|a| a.starts_with("AF_UNIX @"));
    r.scope_abstract_unix = !unix_abstract;
    if unix_abstract {
        r.notes
            .push("abstract unix sockets not scoped: the workload used one".into());
    }
    let signals = profile.syscalls.values().flatten().any(|n| {
        matches!(
            n.as_str(),
            "kill"
                | "tkill"
                | "tgkill"
                | "rt_sigqueueinfo"
                | "rt_tgsigqueueinfo"
                | "pidfd_send_signal"
        )
    });
    r.scope_signals = !signals;
    if signals {
        r.notes.push(
            "signals not scoped: the workload sends signals and the recording does not say to whom"
                .into(),
        );
    }
    r
}

pub fn to_json(rules: &Rules) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(rules).expect("serialises");
    v.push(b'\n');
    v
}

/// The static sealing binary: `$PROFILER_SEAL`, else `profiler-seal` next to this program,
/// else the musl build of this source tree (`cargo xtask setup` makes it). It must be a
/// regular file that only root can change, and statically linked (no `PT_INTERP`): it runs
/// inside images whose C library, if any, is not the host's.
pub fn seal_binary() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os(ENV_SEAL_BINARY) {
        candidates.push(PathBuf::from(p));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(SEAL_BINARY_NAME));
            // target/{debug,release}/profiler -> target/x86_64-unknown-linux-musl/release/
            if let Some(target) = dir.parent() {
                for profile in ["release", "debug"] {
                    candidates.push(
                        target
                            .join("x86_64-unknown-linux-musl")
                            .join(profile)
                            .join(SEAL_BINARY_NAME),
                    );
                }
            }
        }
    }
    let mut why = Vec::new();
    for c in &candidates {
        match check_seal_binary(c) {
            Ok(()) => return Ok(std::fs::canonicalize(c).unwrap_or_else(|_| c.clone())),
            Err(e) => why.push(format!("{}: {e}", c.display())),
        }
    }
    Err(if why.is_empty() {
        "no candidate".into()
    } else {
        why.join("; ")
    })
}

fn check_seal_binary(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    // Every folder on the way must be root's too: a user who owns one could swap the
    // binary after this check, before an engine mounts it.
    let canonical = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    for dir in canonical.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if m.uid() != 0 || (m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0) {
            return Err(format!(
                "{} can be changed by a user other than root",
                dir.display()
            ));
        }
    }
    let meta = std::fs::metadata(&canonical).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err("writable by a user other than root".into());
    }
    let mut head = Vec::new();
    use std::io::Read as _;
    std::fs::File::open(&canonical)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| e.to_string())?;
    if !head.starts_with(b"\x7fELF") {
        return Err("not an ELF executable".into());
    }
    if profiler_seal::resolve::elf_interpreter(&head).is_some() {
        return Err("dynamically linked (build it for x86_64-unknown-linux-musl)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_addresses_give_their_ports() {
        assert_eq!(port_of("AF_INET 127.0.0.1:8080"), Some(8080));
        assert_eq!(port_of("AF_INET6 [::1]:443"), Some(443));
        assert_eq!(port_of("AF_UNIX /run/x.sock"), None);
        assert_eq!(port_of("AF_INET 127.0.0.1:0"), None);
    }
}
