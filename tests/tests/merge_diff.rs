//! `profiler merge` (union with coverage) and `profiler diff` (the CI gate).
use integration_tests::*;

privileged_test!(
    #[scratch = "merge-diff"]
    fn diff_is_a_ci_gate_and_merge_keeps_coverage(dir: TempDir) {
        let small = dir.join("small");
        let big = dir.join("big");
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        record(&small, &["/bin/ls", "/"]);
        record(
            &big,
            &[
                "/bin/sh",
                "-c",
                &format!(
                    "ls / > /dev/null; mkdir {d}/m; chown 1 {f}",
                    d = dir.path().display(),
                    f = file.display()
                ),
            ],
        );

        // NEW needs more: exit 1, and the text names what was added.
        let o = profiler()
            .arg("diff")
            .arg(&small)
            .arg(&big)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("+ x86_64 syscalls:") && text.contains("mkdir"),
            "{text}"
        );
        assert!(text.contains("+ capability CAP_CHOWN"), "{text}");
        // The other way round nothing more is needed: exit 0, removals listed.
        let o = profiler()
            .arg("diff")
            .arg(&big)
            .arg(&small)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&o.stdout).contains("- capability CAP_CHOWN"));
        // Same profile: no differences. A trace compares like its profile.
        let o = profiler()
            .arg("diff")
            .arg(&small)
            .arg(small.join("trace.json"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("no differences"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        // --json for tools.
        let o = profiler()
            .args(["diff", "--json"])
            .arg(&small)
            .arg(&big)
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["needs_more"], true);
        assert!(
            j["added"]["syscalls"]["x86_64"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "mkdir")
        );
        assert_eq!(j["added"]["capabilities"], serde_json::json!(["CAP_CHOWN"]));
        // Errors: exit 2.
        let o = profiler()
            .arg("diff")
            .arg(&small)
            .arg(dir.join("missing"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));

        // Merge: the union, with how many runs used each entry and which run first did.
        let merged = dir.join("merged");
        run_ok(
            profiler()
                .args(["merge", "--out"])
                .arg(&merged)
                .arg(&small)
                .arg(big.join("trace.json")),
        );
        let names = allowed_names(&merged.join("seccomp.json"));
        assert!(names.contains("mkdir") && names.contains("getdents64"));
        let cov = read_json(&merged.join("coverage.json"));
        assert_eq!(cov["runs"].as_array().unwrap().len(), 2);
        assert_eq!(cov["syscalls"]["x86_64"]["getdents64"]["runs"], 2);
        assert_eq!(cov["syscalls"]["x86_64"]["mkdir"]["runs"], 1);
        assert!(
            cov["syscalls"]["x86_64"]["mkdir"]["first_seen_in"]
                .as_str()
                .unwrap()
                .starts_with("/bin/sh")
        );
        assert!(
            cov["syscalls"]["x86_64"]["getdents64"]["first_seen_in"]
                .as_str()
                .unwrap()
                .starts_with("/bin/ls")
        );
        assert_eq!(cov["capabilities"]["CAP_CHOWN"]["runs"], 1);
        // The merged profile covers both: diff against it needs nothing more.
        for p in [&small, &big] {
            let o = profiler().arg("diff").arg(&merged).arg(p).output().unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
);
