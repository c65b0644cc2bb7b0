//! `profiler enforce` decides on an exec by the file the kernel executed (`bprm->file` at
//! sched_process_exec), never by the path in the workload's memory, which a second thread
//! can rewrite between any check and the kernel's own read. Both layers are tested: the
//! kernel-side verdict alone (`--no-landlock`) and with Landlock.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::*;

/// A C workload of tests/workloads, built with gcc into `dir`.
fn build_c(dir: &TempDir, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("workloads/{name}.c"));
    let bin = dir.join(name);
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&bin)
            .arg(&src),
    );
    bin
}

fn record_in(dir: &Path, out: &Path, cmd: &[&str]) {
    let o = profiler()
        .current_dir(dir)
        .args(["record", "-q", "--out"])
        .arg(out)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

fn enforce_in(dir: &Path, profile: &Path, log: &Path, landlock: bool, cmd: &[&str]) -> Output {
    let mut c = profiler();
    c.current_dir(dir)
        .args(["enforce", "--profile"])
        .arg(profile)
        .arg("--log")
        .arg(log);
    if !landlock {
        c.arg("--no-landlock");
    }
    c.arg("--").args(cmd).output().unwrap()
}

/// How many times `id` ran: its output lines.
fn id_runs(o: &Output) -> usize {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("uid="))
        .count()
}

const ROUNDS: &str = "300";

privileged_test!(
    #[scratch = "exec-race"]
    fn the_exec_race_never_runs_an_unlisted_program(dir: TempDir) {
        let race = build_c(&dir, "exec_race");
        let race = race.to_str().unwrap();
        // The race is real here: unconfined, the flipped buffer runs `id` in many rounds.
        let o = Command::new(race)
            .args([ROUNDS, "/usr/bin/true", "/usr/bin/id"])
            .output()
            .unwrap();
        let unconfined = id_runs(&o);
        assert!(
            unconfined > 0,
            "the race never happened in {ROUNDS} rounds: {o:?}"
        );
        let profile = dir.join("p");
        record_in(
            dir.path(),
            &profile,
            &[race, "20", "/usr/bin/true", "/usr/bin/true"],
        );
        for landlock in [false, true] {
            let log = dir.join(&format!("violations-{landlock}.jsonl"));
            let o = enforce_in(
                dir.path(),
                &profile,
                &log,
                landlock,
                &[race, ROUNDS, "/usr/bin/true", "/usr/bin/id"],
            );
            // The workload succeeded; what was killed or denied makes enforce exit 5.
            let violated = !json_lines(&log).is_empty();
            assert_eq!(o.status.code(), Some(if violated { 5 } else { 0 }), "{o:?}");
            assert_eq!(
                id_runs(&o),
                0,
                "an unlisted program ran under enforce (landlock {landlock}); unconfined it ran {unconfined} times: {o:?}"
            );
            let v = json_lines(&log);
            if !landlock {
                // The kernel-side verdict killed each `id` exec, by the file it was.
                assert!(
                    !v.is_empty()
                        && v.iter()
                            .all(|l| l["action"] == "killed" && l["inode"].is_u64()),
                    "{v:?}"
                );
            }
            eprintln!(
                "landlock {landlock}: unconfined runs of id {unconfined}/{ROUNDS}, under enforce 0, violations logged {}",
                v.len()
            );
        }
    }
);

privileged_test!(
    #[scratch = "exec-relative"]
    fn a_relative_command_that_was_recorded_is_allowed(dir: TempDir) {
        std::fs::copy("/usr/bin/true", dir.join("tool")).unwrap();
        let profile = dir.join("p");
        record_in(dir.path(), &profile, &["./tool"]);
        for landlock in [false, true] {
            let log = dir.join(&format!("v-{landlock}.jsonl"));
            let o = enforce_in(dir.path(), &profile, &log, landlock, &["./tool"]);
            assert!(o.status.success(), "landlock {landlock}: {o:?}");
            assert!(json_lines(&log).is_empty(), "{:?}", json_lines(&log));
        }
    }
);

privileged_test!(
    #[scratch = "exec-replaced"]
    /// A different file at a listed path (a binary replaced, or downloaded at run time) does
    /// not run: killed by the kernel-side verdict, refused by Landlock.
    fn a_program_replaced_at_its_recorded_path_does_not_run(dir: TempDir) {
        let tool = dir.join("tool");
        std::fs::copy("/usr/bin/true", &tool).unwrap();
        let profile = dir.join("p");
        let tool_s = tool.to_str().unwrap();
        record_in(dir.path(), &profile, &[tool_s]);
        // Replaced by another program (new inode, new content).
        std::fs::remove_file(&tool).unwrap();
        std::fs::copy("/usr/bin/id", &tool).unwrap();
        let log = dir.join("v-ebpf.jsonl");
        let o = enforce_in(dir.path(), &profile, &log, false, &[tool_s]);
        assert_eq!(o.status.code(), Some(137), "{o:?}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("uid="),
            "{o:?}"
        );
        let v = json_lines(&log);
        assert!(
            v.iter()
                .any(|l| l["rule"] == "exec-file-not-the-recorded-one"
                    && l["path"] == tool_s
                    && l["action"] == "killed"),
            "{v:?}"
        );
        let log = dir.join("v-landlock.jsonl");
        let o = enforce_in(dir.path(), &profile, &log, true, &[tool_s]);
        assert!(!o.status.success(), "{o:?}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("uid="),
            "{o:?}"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("changed since the recording"),
            "{o:?}"
        );
    }
);

privileged_test!(
    #[scratch = "exec-variants"]
    /// An allowed file under an unlisted name, exec'd from a second thread (whose id the
    /// exec replaces), and a memfd exec'd by fd (no path at all): both killed by the
    /// kernel-side verdict alone (`--no-landlock`).
    fn execs_by_thread_and_by_fd_are_judged_too(dir: TempDir) {
        let bin = build_c(&dir, "exec_variants");
        let bin = bin.to_str().unwrap();
        let profile = dir.join("p");
        record_in(dir.path(), &profile, &[bin, "thread", "/usr/bin/true"]);
        // Recorded as it ran: passes.
        let log = dir.join("ok.jsonl");
        let o = enforce_in(
            dir.path(),
            &profile,
            &log,
            false,
            &[bin, "thread", "/usr/bin/true"],
        );
        assert!(o.status.success(), "{o:?}");
        // The same file by another name (a link), from the second thread: killed.
        let link = dir.join("other-name");
        std::os::unix::fs::symlink("/usr/bin/true", &link).unwrap();
        let log = dir.join("thread.jsonl");
        let o = enforce_in(
            dir.path(),
            &profile,
            &log,
            false,
            &[bin, "thread", link.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(137), "{o:?}");
        assert!(
            json_lines(&log)
                .iter()
                .any(|l| l["rule"] == "exec-not-in-profile"),
            "{:?}",
            json_lines(&log)
        );
        // A memfd copy of the allowed file, exec'd by fd: killed (its inode is no file of
        // the profile, and there is no path to check).
        let log = dir.join("memfd.jsonl");
        let o = enforce_in(
            dir.path(),
            &profile,
            &log,
            false,
            &[bin, "memfd", "/usr/bin/true"],
        );
        assert_eq!(o.status.code(), Some(137), "{o:?}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("exec failed"),
            "{o:?}"
        );
    }
);

privileged_test!(
    #[scratch = "enforce-proc-self"]
    /// A workload's writes to its own /proc entries (its oom_score_adj, its threads' names)
    /// are allowed under enforce's Landlock: the rule names the workload's /proc/self, not
    /// profiler's, because the child adds it itself before it restricts.
    fn a_workload_may_write_its_own_proc_entries_under_enforce(dir: TempDir) {
        let program = "import threading\nv = open('/proc/self/oom_score_adj').read()\nopen('/proc/self/oom_score_adj', 'w').write(v)\nt = threading.Thread(target=lambda: None)\nt.start(); t.join()\nimport ctypes\nprint('ok')\n";
        let profile = dir.join("p");
        record_in(dir.path(), &profile, &["/usr/bin/python3", "-c", program]);
        let log = dir.join("v.jsonl");
        let o = enforce_in(
            dir.path(),
            &profile,
            &log,
            true,
            &["/usr/bin/python3", "-c", program],
        );
        assert!(o.status.success(), "{o:?}");
        assert!(json_lines(&log).is_empty(), "{:?}", json_lines(&log));
    }
);
