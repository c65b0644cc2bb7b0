//! Capability whitelists from real kernel checks.
use integration_tests::*;

fn chown_workload(file: &std::path::Path) -> Vec<String> {
    vec![
        "/bin/chown".into(),
        "1:1".into(),
        file.to_string_lossy().into_owned(),
    ]
}

privileged_test!(
    #[scratch = "chown"]
    fn chown_needs_exactly_cap_chown(dir: TempDir) {
        let file = dir.join("owned-by-root");
        std::fs::write(&file, b"x").unwrap();
        let profile = dir.join("profile");
        let cmd = chown_workload(&file);
        let cmd_ref: Vec<&str> = cmd.iter().map(String::as_str).collect();
        record(&profile, &cmd_ref);

        let caps = read_json(&profile.join("capabilities.json"));
        assert_eq!(caps["add"], serde_json::json!(["CAP_CHOWN"]), "{caps:#}");
        assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
        let evidence = caps["evidence"]["CAP_CHOWN"].as_array().unwrap();
        assert!(
            evidence
                .iter()
                .any(|e| e["syscall"].as_str().is_some_and(|s| s.contains("chown"))),
            "CAP_CHOWN evidence should name the chown syscall: {evidence:?}"
        );
        // The kernel checked CAP_SYS_ADMIN without auditing (memory accounting on mmap/brk/
        // execve): seen in the trace, kept out of the whitelist.
        let trace = read_json(&profile.join("trace.json"));
        let unaudited_sys_admin = trace["capability_checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["capability"] == "CAP_SYS_ADMIN")
            .inspect(|c| assert_eq!(c["audit"], "noaudit", "audited CAP_SYS_ADMIN check: {c:#}"))
            .count();
        assert!(
            unaudited_sys_admin > 0,
            "expected unaudited CAP_SYS_ADMIN checks in the trace"
        );
        assert!(caps["ignored_unaudited"]["CAP_SYS_ADMIN"].as_u64().unwrap() > 0);
        assert!(
            caps["notes"]["CAP_CHOWN"]
                .as_str()
                .is_some_and(|n| n.contains("owners")),
            "environment note for CAP_CHOWN: {caps:#}"
        );

        // Passes under its own profile...
        std::fs::write(&file, b"x").unwrap();
        std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
        let ok = run_confined(&profile, &cmd_ref);
        assert!(
            ok.status.success(),
            "{}: {}",
            ok.status,
            String::from_utf8_lossy(&ok.stderr)
        );
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 1);

        // ...and fails with CAP_CHOWN dropped.
        std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
        let without = dir.join("without-chown");
        edited_profile(&profile, &without, None, Some(&[]));
        let denied = run_confined(&without, &cmd_ref);
        assert!(
            !denied.status.success(),
            "chown succeeded without CAP_CHOWN"
        );
        // (chown's own error message cannot be seen: it never wrote to stderr while recorded,
        // so `write` is denied too. The file's owner tells.)
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 0);
    }
);

privileged_test!(
    #[scratch = "nocaps"]
    fn workload_without_privileged_operations_needs_no_capability(dir: TempDir) {
        let profile = dir.join("profile");
        let target = dir.join("a/b/c");
        record(&profile, &["/bin/mkdir", "-p", &target.to_string_lossy()]);
        let caps = read_json(&profile.join("capabilities.json"));
        assert_eq!(caps["add"], serde_json::json!([]), "{caps:#}");
    }
);

privileged_test!(
    #[scratch = "bind80"]
    fn net_bind_service_is_explained_as_environment_dependent(dir: TempDir) {
        let profile = dir.join("profile");
        // Port 80 on loopback, in a fresh network namespace so it never clashes with the host.
        record(
            &profile,
            &[
                "/usr/bin/unshare",
                "--net",
                "/usr/bin/python3",
                "-c",
                "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', 80))\ns.close()",
            ],
        );
        let caps = read_json(&profile.join("capabilities.json"));
        let add: Vec<&str> = caps["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(add.contains(&"CAP_NET_BIND_SERVICE"), "{caps:#}");
        let evidence = &caps["evidence"]["CAP_NET_BIND_SERVICE"][0];
        assert!(
            evidence["syscall"].as_str().unwrap().ends_with("/bind"),
            "{evidence}"
        );
        assert!(
            caps["notes"]["CAP_NET_BIND_SERVICE"]
                .as_str()
                .unwrap()
                .contains("ip_unprivileged_port_start")
        );
    }
);

/// A workload making thousands of unaudited CAP_SYS_ADMIN checks (every private writable
/// mmap asks `security_vm_enough_memory_mm()`) and a few audited ones of the same
/// capability (`unshare(CLONE_NEWUTS)`, `sethostname` in the new namespace).
fn mmap_and_sethostname() -> Vec<&'static str> {
    vec![
        "/usr/bin/env",
        "PYTHONHASHSEED=0",
        "/usr/bin/unshare",
        "--uts",
        "/usr/bin/python3",
        "-c",
        "import ctypes, socket\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.mmap.restype = ctypes.c_void_p\n\
         libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
         libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]\n\
         for i in range(3000):\n\
         \x20   p = libc.mmap(None, 65536, 3, 0x22, -1, 0)\n\
         \x20   assert p not in (None, ctypes.c_void_p(-1).value)\n\
         \x20   libc.munmap(p, 65536)\n\
         socket.sethostname('profiler-test')\n",
    ]
}

/// Per (capability, granted, audit, syscall): how many checks, and how many of them the
/// kernel counted by depth.
fn check_totals(trace: &serde_json::Value) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut totals = std::collections::BTreeMap::new();
    for c in trace["capability_checks"].as_array().unwrap() {
        let key = format!(
            "{} granted={} {} in {}",
            c["capability"].as_str().unwrap(),
            c["granted"],
            c["audit"].as_str().unwrap(),
            c["syscall"]["name"].as_str().unwrap_or("-")
        );
        let e = totals.entry(key).or_insert((0, 0));
        e.0 += c["count"].as_u64().unwrap();
        e.1 += c["counted_by_depth"].as_u64().unwrap_or(0);
    }
    totals
}

privileged_test!(
    #[scratch = "capdepth"]
    /// Checks counted without walking their stacks (known by their depth below the
    /// syscall's entry) give the same counts, the same audit classes and the same whitelist
    /// as taking every check's innermost frames; the audited checks of the same capability
    /// stay audited.
    fn checks_known_by_depth_count_as_walking_every_check(dir: TempDir) {
        let cmd = mmap_and_sethostname();
        let walked = dir.join("walked");
        run_ok(
            profiler()
                .env("PROFILER_CAP_WALK_EVERY_CHECK", "1")
                .arg("record")
                .arg("--out")
                .arg(&walked)
                .arg("--")
                .args(&cmd),
        );
        let by_depth = dir.join("by-depth");
        record(&by_depth, &cmd);

        let reference = check_totals(&read_json(&walked.join("trace.json")));
        let fast = check_totals(&read_json(&by_depth.join("trace.json")));
        let counts = |t: &std::collections::BTreeMap<String, (u64, u64)>| {
            t.iter().map(|(k, v)| (k.clone(), v.0)).collect::<Vec<_>>()
        };
        assert_eq!(
            counts(&fast),
            counts(&reference),
            "by depth: {fast:#?}\nwalked: {reference:#?}"
        );
        assert!(
            reference.values().all(|(_, by_depth)| *by_depth == 0),
            "walking every check counted some by depth: {reference:#?}"
        );
        let (mmaps, mmaps_by_depth) = fast["CAP_SYS_ADMIN granted=true noaudit in mmap"];
        assert!(mmaps >= 3000, "{fast:#?}");
        // Only each depth's first check is walked (samples take just the innermost frames).
        assert!(mmaps_by_depth * 10 >= mmaps * 9, "{fast:#?}");
        let audited = fast
            .keys()
            .filter(|k| k.starts_with("CAP_SYS_ADMIN granted=true audited"))
            .count();
        assert!(
            audited >= 2,
            "unshare and sethostname are audited checks: {fast:#?}"
        );

        let caps = |p: &std::path::Path| read_json(&p.join("capabilities.json"))["add"].clone();
        assert_eq!(caps(&by_depth), caps(&walked));
        assert_eq!(caps(&by_depth), serde_json::json!(["CAP_SYS_ADMIN"]));
    }
);
