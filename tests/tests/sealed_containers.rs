//! Containers held to their image profile by Landlock through the sealing entrypoint:
//! `docker-run.txt` / `podman-run.txt` make the static `profiler-seal` binary the
//! container's entrypoint, which applies `landlock.json` and then runs the recorded
//! entrypoint and command. The probe runs inside the container as the workload itself (a
//! `docker exec` is not a descendant of the entrypoint, so not under its Landlock domain).
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use integration_tests::*;

const PORT: &str = "9000";
const DATA: &str = "/var/lib/app";

fn probe_script() -> String {
    std::fs::read_to_string(workspace_path("tests/workloads/apps/landlock_probe.py")).unwrap()
}

fn has_landlock() -> bool {
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
    if abi < 6 {
        eprintln!("SKIP: Landlock ABI {abi} on this kernel (6 needed for TCP rules and scopes)");
        return false;
    }
    true
}

fn outcomes(o: &Output) -> BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no outcome line: {o:?}\n{}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

/// Records the probe's training run in a Docker container as user `app`.
fn record_probe(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let profile = dir.join("probe");
    let script = probe_script();
    let o = profiler()
        .args(["record", "-q", "--containers", "--out"])
        .arg(&profile)
        .args([
            "--", "docker", "run", "--rm", "--name", name, "--user", "app",
        ])
        .arg(DEBIAN_APPS_IMAGE)
        .args(["python3", "-c", &script, "train", PORT, DATA])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        outcomes(&o).values().filter(|v| *v != "ok").count(),
        0,
        "{o:?}"
    );
    profile
}

fn hostile(engine: &[String], env: Option<&Path>, flags: &[String], image: &str) -> Output {
    let script = probe_script();
    let mut c = Command::new(&engine[0]);
    c.args(&engine[1..])
        .arg("run")
        .arg("--rm")
        .args(flags)
        .arg(image)
        .args(["python3", "-c", &script, "hostile", PORT, DATA]);
    if let Some(conf) = env {
        c.env("CONTAINERS_CONF", conf);
    }
    c.output().unwrap()
}

/// What the sealed container may do (its training) and what it may not: the kernel answers
/// EACCES; the unsealed flags on the same image let the same attempts through (or fail
/// them later, at the network), so the difference is Landlock's.
fn assert_sealed_and_unsealed(sealed: &Output, unsealed: &Output, tmpfs_noexec: bool) {
    let s = outcomes(sealed);
    for what in ["write", "listen_and_connect", "run_python"] {
        assert_eq!(s[what], "ok", "{what} was recorded: {s:?} {sealed:?}");
    }
    for what in ["exec_sh", "exec_copy", "bind_other", "connect_other"] {
        assert_eq!(s[what], "EACCES", "{what}: {s:?} {sealed:?}");
    }
    let stderr = String::from_utf8_lossy(&sealed.stderr);
    assert!(
        stderr.contains("profiler-seal: landlock (kernel ABI") && stderr.contains("fully enforced"),
        "{stderr}"
    );
    let u = outcomes(unsealed);
    assert_eq!(u["exec_sh"], "ok", "{u:?}");
    assert_eq!(u["bind_other"], "ok", "{u:?}");
    assert_eq!(u["connect_other"], "ECONNREFUSED", "{u:?}");
    // Docker mounts --tmpfs noexec, so its copy cannot run unsealed either; podman's tmpfs
    // allows exec, and only Landlock stops the copy.
    assert_eq!(
        u["exec_copy"],
        if tmpfs_noexec { "EACCES" } else { "ok" },
        "{u:?}"
    );
}

privileged_test!(
    #[scratch = "sealed-docker"]
    fn a_sealed_container_cannot_exec_bind_or_connect_outside_its_profile(dir: TempDir) {
        require_docker();
        if !has_landlock() {
            return;
        }
        let name = format!("sealed-{}", std::process::id());
        let profile = record_probe(&dir, &name);
        let rules = read_json(&profile.join("landlock.json"));
        assert_eq!(rules["bind_tcp"], serde_json::json!([9000]), "{rules:#}");
        assert_eq!(rules["cmd"][0], "python3", "{rules:#}");
        let flags = docker_run_flags(&profile);
        assert!(
            flags
                .windows(2)
                .any(|w| w[0] == "--entrypoint" && w[1] == "/.profiler-seal/profiler-seal"),
            "{flags:?}"
        );
        let docker = vec!["docker".to_owned()];
        let sealed = hostile(&docker, None, &flags, DEBIAN_APPS_IMAGE);
        let unsealed = hostile(
            &docker,
            None,
            &run_flags_file(&profile.join("docker-run-unsealed.txt")),
            DEBIAN_APPS_IMAGE,
        );
        assert_sealed_and_unsealed(&sealed, &unsealed, true);

        // podman, with the same profile's podman-run.txt.
        let (conf, podman) = podman_argv();
        let sealed = hostile(
            &podman,
            Some(&conf),
            &podman_run_flags(&profile),
            PODMAN_DEBIAN_APPS_IMAGE,
        );
        let unsealed = hostile(
            &podman,
            Some(&conf),
            &run_flags_file(&profile.join("podman-run-unsealed.txt")),
            PODMAN_DEBIAN_APPS_IMAGE,
        );
        assert_sealed_and_unsealed(&sealed, &unsealed, false);

        // Under `profiler enforce --containers`, the kernel's own Landlock records become
        // the violation lines, and enforce exits 5 (the container itself succeeded).
        let log = dir.join("violations.jsonl");
        let o = profiler()
            .args(["enforce", "--containers", "--profile"])
            .arg(&profile)
            .arg("--log")
            .arg(&log)
            .args(["--", "docker", "run", "--rm"])
            .args(&flags)
            .arg(DEBIAN_APPS_IMAGE)
            .args(["python3", "-c", &probe_script(), "hostile", PORT, DATA])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(5), "{o:?}");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for blocker in ["fs.execute", "net.bind_tcp", "net.connect_tcp"] {
            assert!(
                lines.iter().any(|l| l["rule"] == "landlock"
                    && l["action"] == "denied"
                    && l["blockers"] == blocker),
                "no {blocker} denial: {lines:?}\n{o:?}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l["blockers"] == "net.bind_tcp" && l["address"] == "port 9001"),
            "{lines:?}"
        );

        // With no command after the image, the recorded one runs (the training, sealed).
        let o = Command::new("docker")
            .args(["run", "--rm"])
            .args(&flags)
            .arg(DEBIAN_APPS_IMAGE)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        assert!(outcomes(&o).values().all(|v| v == "ok"), "{o:?}");
    }
);

/// The sealing binary, copied into `dir` with a rules file, as a container would see it.
fn seal_in(dir: &TempDir, rules: &str) -> std::path::PathBuf {
    let seal = workspace_path("target/x86_64-unknown-linux-musl/release/profiler-seal");
    let at = dir.join("seal");
    std::fs::create_dir_all(&at).unwrap();
    std::fs::copy(&seal, at.join("profiler-seal")).unwrap();
    std::fs::write(at.join("landlock.json"), rules).unwrap();
    at.join("profiler-seal")
}

privileged_test!(
    #[scratch = "seal-closed"]
    /// A missing, malformed or widened rules file stops the container: nothing runs
    /// unsealed.
    fn the_sealing_entrypoint_fails_closed(dir: TempDir) {
        let marker = dir.join("ran");
        let cmd = format!("touch {}", marker.display());
        for (rules, why) in [
            (
                "{\"schema\": \"profiler.dev/landlock/v1\",",
                "landlock.json:1:",
            ),
            ("{\"schema\": \"other\"}", "missing field"),
            (
                "{\"schema\":\"profiler.dev/landlock/v1\",\"execute\":[],\"write_beneath\":[],\"bind_tcp\":[],\"connect_tcp\":[],\"scope_abstract_unix\":true,\"scope_signals\":true,\"allow_everything\":true}",
                "allow_everything",
            ),
        ] {
            let seal = seal_in(&dir, rules);
            let o = Command::new(&seal)
                .args(["/bin/sh", "-c", &cmd])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(126), "{rules}: {o:?}");
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(why),
                "{rules}: {o:?}"
            );
            assert!(!marker.exists(), "the command ran unsealed with {rules}");
        }
        std::fs::remove_file(dir.join("seal/landlock.json")).unwrap();
        let o = Command::new(dir.join("seal/profiler-seal"))
            .args(["/bin/sh", "-c", &cmd])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(126), "{o:?}");
        assert!(!marker.exists());
    }
);

privileged_test!(
    #[scratch = "seal-syscalls"]
    /// The sealing entrypoint runs under the container's seccomp profile, which gets the
    /// syscalls it makes (profiler_seal::SYSCALLS): that list is what strace sees it make
    /// before it executes the workload.
    fn the_sealing_entrypoints_syscalls_are_the_ones_its_profile_allows(dir: TempDir) {
        let rules = format!(
            "{{\"schema\":\"profiler.dev/landlock/v1\",\"execute\":[{{\"path\":\"/usr/bin/true\"}}],\"write_beneath\":[\"{}\"],\"bind_tcp\":[80],\"connect_tcp\":[443],\"scope_abstract_unix\":true,\"scope_signals\":true,\"cmd\":[\"/usr/bin/true\"]}}",
            dir.path().display()
        );
        let seal = seal_in(&dir, &rules);
        let log = dir.join("strace");
        let o = Command::new("strace")
            .arg("-f")
            .arg("-qq")
            .arg("-o")
            .arg(&log)
            .arg(&seal)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        let mut before_exec = std::collections::BTreeSet::new();
        let mut execs = 0;
        for line in text.lines() {
            let call = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.split('(').next())
                .unwrap_or("");
            if call == "execve" {
                execs += 1;
                if execs == 2 {
                    break; // the workload's own exec
                }
            }
            if !call.is_empty() && !call.starts_with('+') && !call.starts_with('<') {
                before_exec.insert(call.to_owned());
            }
        }
        assert_eq!(execs, 2, "{text}");
        let listed: std::collections::BTreeSet<String> = profiler_seal::SYSCALLS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let unlisted: Vec<&String> = before_exec.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "not in profiler_seal::SYSCALLS: {unlisted:?}\n{text}"
        );
        for needed in ["landlock_create_ruleset", "landlock_restrict_self", "prctl"] {
            assert!(before_exec.contains(needed), "{needed}: {text}");
        }
    }
);
