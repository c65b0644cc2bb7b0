//! Profiles that are exactly right: argument rules, errno semantics, default actions,
//! architectures.
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::*;

fn python(code: &str) -> Vec<String> {
    vec!["/usr/bin/python3".into(), "-c".into(), code.into()]
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

privileged_test!(
    #[scratch = "families"]
    fn socket_families_outside_the_recording_are_denied(dir: TempDir) {
        let profile = dir.join("profile");
        let workload = python(
            "import socket\nfor f in (socket.AF_INET, socket.AF_UNIX):\n    socket.socket(f, socket.SOCK_STREAM).close()\nprint('ok')",
        );
        record(&profile, &refs(&workload));
        let seccomp = read_json(&profile.join("seccomp.json"));
        let socket_rules: Vec<u64> = seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"] == serde_json::json!(["socket"]))
            .map(|r| r["args"][0]["value"].as_u64().unwrap())
            .collect();
        assert_eq!(
            socket_rules,
            vec![libc::AF_UNIX as u64, libc::AF_INET as u64]
        );

        let o = run_confined(&profile, &refs(&workload));
        assert!(o.status.success(), "{}", stderr(&o));
        for (family, kind) in [
            ("AF_NETLINK", "SOCK_RAW"),
            ("AF_PACKET", "SOCK_RAW"),
            ("AF_INET6", "SOCK_STREAM"),
        ] {
            let o = run_confined(
                &profile,
                &refs(&python(&format!(
                    "import socket\nsocket.socket(socket.{family}, socket.{kind})"
                ))),
            );
            assert!(!o.status.success(), "{family} socket allowed");
            assert!(
                stderr(&o).contains("Operation not permitted"),
                "{family}: {}",
                stderr(&o)
            );
        }
    }
);

privileged_test!(
    #[scratch = "namespaces"]
    fn namespaces_cannot_be_created_when_none_were_recorded(dir: TempDir) {
        let profile = dir.join("profile");
        // unshare(CLONE_FILES) and a subprocess (clone/vfork): no namespace flag anywhere.
        let workload = python(
            "import ctypes, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\nassert libc.unshare(0x400) == 0\nsubprocess.run(['/bin/true'], check=True)\nprint('ok')",
        );
        record(&profile, &refs(&workload));
        let o = run_confined(&profile, &refs(&workload));
        assert!(o.status.success(), "{}", stderr(&o));
        let attempt = |flags: &str, via: &str| {
            let code = match via {
                "unshare" => format!(
                    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.unshare({flags})\nprint(r, ctypes.get_errno())"
                ),
                // raw clone(flags | SIGCHLD): the child exits at once.
                _ => format!(
                    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.syscall(56, {flags} | 17, 0, 0, 0, 0)\nif r == 0: os._exit(0)\nprint(min(r, 1), ctypes.get_errno())"
                ),
            };
            let o = run_confined(&profile, &refs(&python(&code)));
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        };
        // CLONE_NEWUSER = 0x10000000, CLONE_NEWNET = 0x40000000
        assert_eq!(
            attempt("0x10000000", "unshare"),
            "-1 1",
            "unshare(CLONE_NEWUSER) must fail with EPERM"
        );
        assert_eq!(
            attempt("0x40000000", "unshare"),
            "-1 1",
            "unshare(CLONE_NEWNET) must fail with EPERM"
        );
        assert_eq!(
            attempt("0x400", "unshare"),
            "0 0",
            "unshare(CLONE_FILES) was recorded and stays allowed"
        );
        assert_eq!(
            attempt("0x10000000", "clone"),
            "-1 1",
            "clone(CLONE_NEWUSER) must fail with EPERM"
        );
    }
);

fn build_fallback_program(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/libc_fallback.c");
    let bin = dir.join("libc_fallback");
    run_ok(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&src));
    bin
}

/// Writes a profile folder that allows everything except `enosys` (ENOSYS) and keeps every
/// capability: the kernel/libc of an older system, as far as these syscalls go.
fn permissive_profile(dir: &Path, enosys: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let seccomp = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": if enosys.is_empty() { serde_json::json!([]) } else {
            serde_json::json!([{ "names": enosys, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS }])
        },
    });
    std::fs::write(dir.join("seccomp.json"), seccomp.to_string()).unwrap();
    let all: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    std::fs::write(
        dir.join("capabilities.json"),
        serde_json::json!({ "drop": ["ALL"], "add": all }).to_string(),
    )
    .unwrap();
}

privileged_test!(
    /// A profile recorded on a system without faccessat2/statx (simulated: they answer ENOSYS, so
    /// libc used its fallbacks and the recording never saw them) answers them with ENOSYS, so the
    /// same program on a newer system falls back instead of failing with EPERM.
    #[scratch = "siblings"]
    fn newer_siblings_get_enosys_and_libc_falls_back(dir: TempDir) {
        let bin = build_fallback_program(dir.path());
        let bin = bin.to_string_lossy().into_owned();
        let older = dir.join("older-system");
        permissive_profile(&older, &["faccessat2", "statx"]);
        let profile = dir.join("profile");
        let o = record(
            &profile,
            &[
                &profiler_bin().to_string_lossy(),
                "run",
                "--quiet",
                "--profile",
                &older.to_string_lossy(),
                "--",
                &bin,
                "new",
                "/etc/hostname",
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("faccessat ok, statx failed errno {}", libc::ENOSYS)
        );
        // (statx may still be in the profile: profiler run itself, the stand-in for the older
        // system, calls it before it loads the filter. faccessat2 only the program calls.)
        let names = allowed_names(&profile.join("seccomp.json"));
        assert!(
            !names.contains("faccessat2"),
            "the filter hid faccessat2 from the recording"
        );
        // On this system faccessat2 exists: under the profile it answers ENOSYS and glibc takes
        // the same fallback as on the older system.
        let o = run_confined(&profile, &[&bin, "new", "/etc/hostname"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("faccessat ok"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        // Without the sibling rules the same run breaks: faccessat2 would get EPERM.
        let mut seccomp = read_json(&profile.join("seccomp.json"));
        seccomp["syscalls"]
            .as_array_mut()
            .unwrap()
            .retain(|r| r["errnoRet"] != libc::ENOSYS);
        let stripped = dir.join("stripped");
        edited_profile(&profile, &stripped, None, None);
        std::fs::write(stripped.join("seccomp.json"), seccomp.to_string()).unwrap();
        let o = run_confined(&stripped, &[&bin, "new", "/etc/hostname"]);
        assert!(
            !o.status.success(),
            "faccessat2 with EPERM should have failed the program"
        );
    }
);

privileged_test!(
    #[scratch = "always"]
    fn always_allowed_syscalls_are_in_every_profile(dir: TempDir) {
        let profile = dir.join("profile");
        record(&profile, &["/bin/true"]);
        let names = allowed_names(&profile.join("seccomp.json"));
        for n in [
            "exit",
            "exit_group",
            "rt_sigreturn",
            "restart_syscall",
            "clock_gettime",
            "gettimeofday",
            "time",
            "getcpu",
        ] {
            assert!(names.contains(n), "{n} missing");
        }
    }
);

privileged_test!(
    #[scratch = "actions"]
    fn default_action_kill_and_log(dir: TempDir) {
        let profile = dir.join("profile");
        record(&profile, &["/bin/ls", "/"]);
        let target = dir.join("made-by-mkdir");
        let target_s = target.to_string_lossy().into_owned();
        for (action, expect_made, expect_signal) in
            [("kill", false, Some(libc::SIGSYS)), ("log", true, None)]
        {
            let p = dir.join(action);
            run_ok(
                profiler()
                    .args(["generate", "--default-action", action, "--out"])
                    .arg(&p)
                    .arg(profile.join("trace.json")),
            );
            let seccomp = read_json(&p.join("seccomp.json"));
            // The default action on a program the recording never ran: seccomp alone.
            let o = run_seccomp_only(&p, &["/bin/mkdir", &target_s]);
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(
                o.status.signal(),
                expect_signal,
                "{action}: {} {}",
                seccomp["defaultAction"],
                stderr(&o)
            );
            assert_eq!(target.exists(), expect_made, "{action}");
            let _ = std::fs::remove_dir(&target);
        }
    }
);

/// Builds tests/workloads/i386.c statically for the ABI `-m32`/`-mx32` names, in `dir`.
fn build_static_workload(dir: &TempDir, abi_flag: &str, package: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/i386.c");
    let bin = dir.join(&format!("workload{abi_flag}"));
    let built = Command::new("gcc")
        .args([abi_flag, "-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "gcc {abi_flag} -static failed ({package} missing?): {}",
        stderr(&built)
    );
    bin
}

privileged_test!(
    #[scratch = "i386"]
    fn i386_binary_is_recorded_under_its_own_architecture(dir: TempDir) {
        let bin = build_static_workload(&dir, "-m32", "gcc-multilib");
        let bin = bin.to_string_lossy().into_owned();
        let profile = dir.join("profile");
        let o = record(&profile, &[&bin, "/etc/hostname"]);
        let trace = read_json(&profile.join("trace.json"));
        let syscalls = traced_syscalls(&trace);
        let i386 = &syscalls["i386"];
        // Named from the i386 table: ugetrlimit/set_thread_area exist only there; the socket
        // goes through the socketcall multiplexer on this libc.
        assert!(i386.contains("set_thread_area"), "{i386:?}");
        assert!(i386.contains("openat") && i386.contains("read"));
        assert_eq!(
            syscalls["x86_64"],
            ["execve".to_owned()].into_iter().collect(),
            "only the exec is 64-bit"
        );
        let seccomp = read_json(&profile.join("seccomp.json"));
        assert_eq!(
            seccomp["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        // The file itself says it is 32-bit: its ELF class and machine, read at the exec.
        let files = &trace["image"]["executable_files"];
        assert!(
            files
                .as_object()
                .unwrap()
                .values()
                .any(|f| f["format"] == "elf32 i386"),
            "{files:#}"
        );
        // So a profile made from it lists i386 even where no 32-bit syscall was seen
        // (here: the trace with its i386 syscalls removed, regenerated).
        let mut only64 = trace.clone();
        only64["syscalls"].as_object_mut().unwrap().remove("i386");
        let edited = dir.join("only64.json");
        std::fs::write(&edited, serde_json::to_vec(&only64).unwrap()).unwrap();
        let regenerated = dir.join("regenerated");
        let regen = profiler()
            .args(["generate", "--out"])
            .arg(&regenerated)
            .arg(&edited)
            .output()
            .unwrap();
        assert!(regen.status.success(), "{regen:?}");
        assert_eq!(
            read_json(&regenerated.join("seccomp.json"))["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        let names = allowed_names(&profile.join("seccomp.json"));
        if i386.contains("socketcall") {
            assert!(
                names.contains("socket") && !names.contains("socketcall"),
                "socketcall call numbers not translated"
            );
        }
        let ok = run_confined(&profile, &[&bin, "/etc/hostname"]);
        assert!(ok.status.success(), "{}", stderr(&ok));
        assert_eq!(ok.stdout, o.stdout);
        // A 32-bit mkdir the recording never saw is denied.
        let o = run_confined(
            &profile,
            &[&bin, "/etc/hostname", &dir.join("newdir").to_string_lossy()],
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("mkdir errno 1"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
);

privileged_test!(
    /// What a 32-bit process does reaches the image profile like a 64-bit one's: its exec
    /// (argv of 32-bit pointers), its mkdir, its socket (through socketcall on this libc).
    #[scratch = "i386-image"]
    fn i386_program_events_reach_the_image_profile(dir: TempDir) {
        let bin = build_static_workload(&dir, "-m32", "gcc-multilib");
        let made = dir.join("made");
        let profile = dir.join("profile");
        let o = record(
            &profile,
            &[
                &bin.to_string_lossy(),
                "/etc/hostname",
                &made.to_string_lossy(),
                "/bin/echo",
                "from-exec",
            ],
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("from-exec"),
            "{}",
            stderr(&o)
        );
        let image = read_json(&profile.join("image-profile.json"));
        assert_eq!(
            image["executables"]["/bin/echo"],
            serde_json::json!(["/bin/echo"]),
            "{image:#}"
        );
        assert_eq!(
            image["written_paths"][made.to_string_lossy().as_ref()],
            serde_json::json!(["mkdir"]),
            "{image:#}"
        );
        assert_eq!(
            image["network"]["sockets"],
            serde_json::json!(["AF_INET/SOCK_STREAM/0"]),
            "{image:#}"
        );
    }
);

privileged_test!(
    #[scratch = "x32"]
    fn x32_binary_is_recorded_under_its_own_architecture(dir: TempDir) {
        let bin = build_static_workload(&dir, "-mx32", "libc6-dev-x32");
        match Command::new(&bin).arg("/etc/hostname").output() {
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
                eprintln!(
                    "SKIP: this kernel has no x32 ABI (CONFIG_X86_X32_ABI): exec gives ENOEXEC"
                );
                return;
            }
            _ => {}
        }
        let bin = bin.to_string_lossy().into_owned();
        let profile = dir.join("profile");
        record(&profile, &[&bin, "/etc/hostname"]);
        let trace = read_json(&profile.join("trace.json"));
        assert!(traced_syscalls(&trace).contains_key("x32"));
        let ok = run_confined(&profile, &[&bin, "/etc/hostname"]);
        assert!(ok.status.success());
    }
);

privileged_test!(
    #[scratch = "under-seccomp"]
    fn recording_under_a_seccomp_filter_warns(dir: TempDir) {
        let logged = dir.join("allow-all");
        permissive_profile(&logged, &[]);
        let o = profiler()
            .args(["run", "--quiet", "--profile"])
            .arg(&logged)
            .arg("--")
            .arg(profiler_bin())
            .args(["record", "--out"])
            .arg(dir.join("inner"))
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        assert!(
            stderr(&o).contains("runs under a seccomp filter"),
            "{}",
            stderr(&o)
        );
    }
);
