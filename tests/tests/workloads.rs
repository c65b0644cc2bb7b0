//! Real workloads recorded by profiler, compared with `strace -f` as ground truth, then run
//! under their own profile (must pass) and under the profile minus one syscall they need
//! (must fail).
use std::collections::BTreeSet;

use integration_tests::*;

/// Syscalls profiler records and `strace -f -c` does not count, and why:
/// `strace -c` accounts a syscall when it returns; `exit` and `exit_group` never return.
const NEVER_RETURN: &[&str] = &["exit", "exit_group"];

struct Workload {
    name: &'static str,
    /// Command; the literal `WORKDIR` is replaced by a fresh folder for each run.
    cmd: &'static [&'static str],
    /// A syscall the workload cannot do without (beyond the start-up of any program).
    essential: &'static [&'static str],
}

fn python_script() -> String {
    format!(
        "{}/workloads/files_json_sqlite.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

const PIPELINE: Workload = Workload {
    name: "shell-pipeline",
    cmd: &[
        "/bin/sh",
        "-c",
        "cat /etc/passwd /etc/group | sort | uniq -c | grep -v nologin | wc -l > \"$1/count\"; cat \"$1/count\"",
        "sh",
        "WORKDIR",
    ],
    essential: &["pipe", "pipe2"],
};

const COREUTILS: Workload = Workload {
    name: "coreutils",
    cmd: &[
        "/bin/sh",
        "-c",
        "mkdir -p \"$1/a/b\" && cp /etc/os-release \"$1/a/b/\" && ls -la \"$1/a/b\" > \"$1/ls.txt\" \
         && mv \"$1/a/b/os-release\" \"$1/a/moved\" && sha256sum \"$1/a/moved\" && stat \"$1/a/moved\" > /dev/null \
         && date -u +%Y && rm -r \"$1/a\"",
        "sh",
        "WORKDIR",
    ],
    essential: &["mkdir"],
};

const TAR_GZIP: Workload = Workload {
    name: "tar-gzip",
    cmd: &[
        "/bin/sh",
        "-c",
        "mkdir \"$1/src\" && cp -r /etc/apt /usr/share/doc/tar \"$1/src/\" && tar -C \"$1\" -czf \"$1/a.tgz\" src \
         && mkdir \"$1/x\" && tar -C \"$1/x\" -xzf \"$1/a.tgz\" && diff -r \"$1/src\" \"$1/x/src\" && echo same",
        "sh",
        "WORKDIR",
    ],
    essential: &["utimensat"],
};

fn command(w: &Workload, dir: &TempDir, python: &str) -> Vec<String> {
    w.cmd
        .iter()
        .map(|a| match *a {
            "WORKDIR" => dir.path().to_string_lossy().into_owned(),
            "PYTHON_SCRIPT" => python.to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

fn check_workload(w: &Workload) {
    if !can_record() {
        return;
    }
    let script = python_script();
    let profile = TempDir::new(&format!("{}-profile", w.name));

    // 1. Record.
    let dir = TempDir::new(w.name);
    let cmd = command(w, &dir, &script);
    let cmd_ref: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let recorded_out = record(profile.path(), &cmd_ref);
    let trace = read_json(&profile.join("trace.json"));
    let recorded = traced_syscalls(&trace);
    assert_eq!(
        recorded.keys().collect::<Vec<_>>(),
        vec!["x86_64"],
        "{}: only x86_64 syscalls expected",
        w.name
    );
    let recorded = &recorded["x86_64"];

    // 2. Ground truth from strace -f, same command on a fresh folder.
    let dir2 = TempDir::new(w.name);
    let cmd2 = command(w, &dir2, &script);
    let cmd2_ref: Vec<&str> = cmd2.iter().map(String::as_str).collect();
    let straced = strace_syscalls(&cmd2_ref);
    let only_recorded: BTreeSet<_> = recorded
        .difference(&straced)
        .filter(|n| !NEVER_RETURN.contains(&n.as_str()))
        .collect();
    let only_straced: BTreeSet<_> = straced.difference(recorded).collect();
    assert!(
        only_recorded.is_empty() && only_straced.is_empty(),
        "{}: recorded and strace -f differ\n  only recorded: {only_recorded:?}\n  only strace: {only_straced:?}",
        w.name
    );

    // 3. The workload passes under its own profile, with the same output: replayed in the
    // folder it was recorded in, emptied (the image profile's writable directories are
    // paths, which Landlock holds it to).
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let cmd3_ref = &cmd_ref;
    let confined = run_confined(profile.path(), cmd3_ref);
    assert!(
        confined.status.success(),
        "{}: fails under its own profile: {}\n{}",
        w.name,
        confined.status,
        String::from_utf8_lossy(&confined.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&confined.stdout).replace(&*dir.path().to_string_lossy(), "DIR"),
        String::from_utf8_lossy(&recorded_out.stdout)
            .replace(&*dir.path().to_string_lossy(), "DIR"),
        "{}: output differs under the profile",
        w.name
    );

    // 4. Without one syscall it needs, it fails.
    let essential = w
        .essential
        .iter()
        .find(|n| recorded.contains(**n))
        .unwrap_or_else(|| panic!("{}: none of {:?} was recorded", w.name, w.essential));
    let reduced = TempDir::new(&format!("{}-reduced", w.name));
    edited_profile(profile.path(), reduced.path(), Some(essential), None);
    let dir4 = TempDir::new(w.name);
    let cmd4 = command(w, &dir4, &script);
    let cmd4_ref: Vec<&str> = cmd4.iter().map(String::as_str).collect();
    let denied = run_confined(reduced.path(), &cmd4_ref);
    assert!(
        !denied.status.success(),
        "{}: still succeeds without {essential}",
        w.name
    );
}

#[test]
fn shell_pipeline() {
    check_workload(&PIPELINE);
}

#[test]
fn coreutils() {
    check_workload(&COREUTILS);
}

#[test]
fn tar_gzip() {
    check_workload(&TAR_GZIP);
}

#[test]
fn python_files_json_sqlite_subprocess() {
    check_workload(&Workload {
        name: "python",
        cmd: &["/usr/bin/python3", "PYTHON_SCRIPT", "WORKDIR"],
        essential: &["rename"],
    });
}

/// A 64-bit syscall number with its upper half set is the syscall its low half names: the
/// kernel dispatches on the low 32 bits (arch/x86/entry/syscall_64.c, `do_syscall_x64`), and
/// so does the tracepoint's number. profiler must record that syscall (here getpgrp, 111,
/// which python never makes on its own), not count an out-of-range number as lost.
#[test]
fn a_syscall_number_with_its_upper_half_set_is_recorded_as_the_kernel_runs_it() {
    if !can_record() {
        return;
    }
    let dir = TempDir::new("upper-half");
    let out = dir.join("profile");
    let script = "import ctypes, os\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  libc.syscall.restype = ctypes.c_long\n\
                  r = libc.syscall(ctypes.c_long((1 << 32) | 111))\n\
                  assert r == os.getpgrp(), (r, ctypes.get_errno())\n";
    record(&out, &["/usr/bin/python3", "-c", script]);
    let trace = read_json(&out.join("trace.json"));
    let syscalls = traced_syscalls(&trace);
    assert!(
        syscalls["x86_64"].contains("getpgrp"),
        "getpgrp missing: {:?}",
        syscalls["x86_64"]
    );
    assert_eq!(
        trace["losses"]["syscalls_out_of_range"], 0,
        "counted as out of range: {}",
        trace["losses"]
    );
}
