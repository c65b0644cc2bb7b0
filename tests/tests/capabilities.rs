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
