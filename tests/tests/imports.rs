//! Coverage beyond the training run: what the recorded programs import (their ELF import
//! tables) but never called while recording, in the summary and coverage.json, and in the
//! profile with `--include-imported`. Real programs, built here with gcc, recorded and run
//! confined with the real binary.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::*;

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
}

/// gcc `flags` -o DIR/NAME tests/workloads/SRC.
fn build(dir: &TempDir, src: &str, name: &str, flags: &[&str]) -> PathBuf {
    let bin = dir.join(name);
    run_ok(
        Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&bin)
            .arg(workload(src)),
    );
    bin
}

/// The service under some profiler command, once it has said "ready" (30 s at most).
fn start_service(cmd: &mut Command, dir: &TempDir, tag: &str) -> Background {
    let service = Background::start(cmd, dir, tag);
    service.wait_for_output("ready", Duration::from_secs(30));
    service
}

/// Sends one request line, returns the whole reply (empty when the connection broke).
fn client(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the service");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

/// A port of this test process's own (the profile's Landlock rules name the port it bound).
fn port() -> u16 {
    20000 + (std::process::id() % 20000) as u16
}

/// The rules of a seccomp.json that `--include-imported` added.
fn imported_rules(profile: &Path) -> Vec<serde_json::Value> {
    read_json(&profile.join("seccomp.json"))["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["comment"]
                .as_str()
                .is_some_and(|c| c.starts_with("imported by "))
        })
        .cloned()
        .collect()
}

fn names(rule: &serde_json::Value) -> Vec<String> {
    rule["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// Under the profile in `profile`: a good client, a bad one, and (when the service is
/// expected to survive it) a good one and quit.
fn serve_a_bad_client(
    dir: &TempDir,
    profile: &Path,
    bin: &Path,
    tag: &str,
    survives: bool,
) -> (i32, String, String, String) {
    let p = port();
    let svc = start_service(
        profiler()
            .args(["run", "--quiet", "--profile"])
            .arg(profile)
            .arg("--")
            .arg(bin)
            .arg(p.to_string()),
        dir,
        tag,
    );
    assert_eq!(client(p, "hello\n"), "ok\n");
    let bad = client(p, "GET / HTTP/1.0\n");
    if survives {
        assert_eq!(client(p, "hello\n"), "ok\n");
        assert_eq!(client(p, "quit\n"), "bye\n");
    }
    let (code, out, err) = svc.wait_at_most(Duration::from_secs(30));
    (code, bad, out, err)
}

privileged_test!(
    #[scratch = "imports"]
    /// Trained with good clients only, the summary names the error path's shutdown and kill
    /// under the service; the plain profile breaks that path, and `--include-imported allow`
    /// or `log` (from `generate` and `merge`) lets it work. ptrace, imported too, is added
    /// only when named.
    fn the_error_path_a_training_missed_is_reported_and_can_be_included(dir: TempDir) {
        let bin = build(&dir, "bad_client_service.c", "bad_client_service", &["-O2"]);
        let bin_s = bin.display().to_string();
        let trained = dir.join("trained");
        let p = port();
        let svc = start_service(
            profiler()
                .args(["record", "--out"])
                .arg(&trained)
                .arg("--")
                .arg(&bin)
                .arg(p.to_string()),
            &dir,
            "record",
        );
        assert_eq!(client(p, "hello\n"), "ok\n");
        assert_eq!(client(p, "hello\n"), "ok\n");
        assert_eq!(client(p, "quit\n"), "bye\n");
        let (code, out, err) = svc.wait_at_most(Duration::from_secs(30));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("bad clients: 0"), "{out}");

        // The summary: one line for the service, naming both, and not what it did call.
        let line = err
            .lines()
            .find(|l| {
                l.contains("imported, never called during recording: ")
                    && l.ends_with(&format!("({bin_s})"))
            })
            .unwrap_or_else(|| panic!("no imports line for {bin_s}:\n{err}"));
        let listed: Vec<&str> = line
            .split("recording: ")
            .nth(1)
            .unwrap()
            .trim_end_matches(&format!(" ({bin_s})"))
            .split(", ")
            .collect();
        for n in ["kill", "shutdown", "ptrace"] {
            assert!(listed.contains(&n), "{n} not in {listed:?}");
        }
        for n in ["accept", "bind", "listen", "read", "write"] {
            assert!(
                !listed.contains(&n),
                "{n} was called, yet listed: {listed:?}"
            );
        }

        // coverage.json from record: seen with a run count, or imported only, by whom.
        let cov = read_json(&trained.join("coverage.json"));
        let trace = read_json(&trained.join("trace.json"));
        let seen = &traced_syscalls(&trace)["x86_64"];
        assert_eq!(cov["syscalls"]["x86_64"]["accept"]["runs"], 1, "{cov:#}");
        assert_eq!(
            cov["syscalls"]["x86_64"]["accept"]["imported_by"],
            serde_json::json!([bin_s]),
            "{cov:#}"
        );
        for n in ["kill", "shutdown"] {
            let e = &cov["imported_only"]["x86_64"][n];
            assert_eq!(e["imported_by"], serde_json::json!([bin_s]), "{cov:#}");
            assert_eq!(e["profile"], "denied", "{cov:#}");
        }
        let only = cov["imported_only"]["x86_64"].as_object().unwrap();
        for n in only.keys() {
            assert!(
                !seen.contains(n),
                "{n} was seen, yet listed as imported only"
            );
        }
        let program = &cov["programs"][&bin_s];
        assert_eq!(program["import_table"], "dynamic", "{cov:#}");
        assert!(
            program["objects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o.as_str().unwrap().ends_with("/libc.so.6")),
            "{cov:#}"
        );
        // trace.json keeps the analysis for later `generate`s.
        let imports = &trace["image"]["executable_files"][&bin_s]["imports"];
        assert!(
            imports["objects"][&bin_s]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "shutdown"),
            "{imports:#}"
        );

        // The plain profile: the bad client breaks the error path.
        let (code, bad, _, err) = serve_a_bad_client(&dir, &trained, &bin, "plain", false);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("shutdown: Operation not permitted"),
            "{bad:?} {err}"
        );

        // generate --include-imported allow: the error path works.
        let allowed = dir.join("allowed");
        run_ok(
            profiler()
                .args(["generate", "--include-imported", "allow", "--out"])
                .arg(&allowed)
                .arg(trained.join("trace.json")),
        );
        let rules = imported_rules(&allowed);
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW");
        assert_eq!(rules[0]["comment"], format!("imported by {bin_s}"));
        let added = names(&rules[0]);
        assert!(
            added.contains(&"kill".into()) && added.contains(&"shutdown".into()),
            "{added:?}"
        );
        assert!(!added.contains(&"ptrace".into()), "{added:?}");
        let (code, bad, out, err) = serve_a_bad_client(&dir, &allowed, &bin, "allowed", true);
        assert_eq!((code, bad.as_str()), (0, "bad request\n"), "{err}");
        assert!(out.contains("bad clients: 1"), "{out}");
        let cov = read_json(&allowed.join("coverage.json"));
        assert_eq!(cov["imported_only"]["x86_64"]["kill"]["profile"], "allowed");

        // merge --include-imported log, limited to the service: logged, and it works.
        let logged = dir.join("logged");
        run_ok(
            profiler()
                .args([
                    "merge",
                    "--include-imported",
                    "log",
                    "--include-imported-from",
                ])
                .arg(&bin)
                .arg("--out")
                .arg(&logged)
                .arg(&trained),
        );
        let rules = imported_rules(&logged);
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0]["action"], "SCMP_ACT_LOG");
        let (code, bad, out, err) = serve_a_bad_client(&dir, &logged, &bin, "logged", true);
        assert_eq!((code, bad.as_str()), (0, "bad request\n"), "{err}");
        assert!(out.contains("bad clients: 1"), "{out}");

        // A dangerous import only when named.
        let named = dir.join("named");
        run_ok(
            profiler()
                .args([
                    "generate",
                    "--include-imported",
                    "allow",
                    "--include-imported-syscall",
                    "ptrace",
                    "--out",
                ])
                .arg(&named)
                .arg(trained.join("trace.json")),
        );
        assert!(names(&imported_rules(&named)[0]).contains(&"ptrace".into()));

        // `record --include-imported log` does the same at once, and says so.
        let recorded_logged = dir.join("recorded-logged");
        let svc = start_service(
            profiler()
                .args(["record", "--include-imported", "log", "--out"])
                .arg(&recorded_logged)
                .arg("--")
                .arg(&bin)
                .arg(p.to_string()),
            &dir,
            "record-logged",
        );
        assert_eq!(client(p, "hello\n"), "ok\n");
        assert_eq!(client(p, "quit\n"), "bye\n");
        let (code, _, err) = svc.wait_at_most(Duration::from_secs(30));
        assert_eq!(code, 0, "{err}");
        assert!(
            err.lines().any(|l| l.contains(
                "imported, never called during recording, logged by --include-imported: "
            ) && l.contains("kill")
                && l.contains("shutdown")
                && l.ends_with(&format!("({bin_s})"))),
            "{err}"
        );
        let rules = imported_rules(&recorded_logged);
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0]["action"], "SCMP_ACT_LOG");

        // A trace is input: an import that is no syscall of the program's architecture is
        // refused with the file and its position (exit 2), as any invalid trace is.
        let text = std::fs::read_to_string(trained.join("trace.json")).unwrap();
        let hostile = dir.join("hostile.json");
        let edited = text.replacen("\"shutdown\"", "\"shutdown\\\"]}\"", 1);
        assert_ne!(edited, text);
        std::fs::write(&hostile, &edited).unwrap();
        let o = profiler()
            .args(["generate", "--include-imported", "allow", "--out"])
            .arg(dir.join("hostile"))
            .arg(&hostile)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{}:", hostile.display()))
                && stderr.contains("is not a syscall of x86_64"),
            "{stderr}"
        );
        assert!(!dir.join("hostile").exists());

        // A program the recording never ran: an error (exit 2), nothing written.
        let typo = dir.join("typo");
        let o = profiler()
            .args([
                "generate",
                "--include-imported",
                "allow",
                "--include-imported-from",
                "/usr/sbin/nginx",
                "--out",
            ])
            .arg(&typo)
            .arg(trained.join("trace.json"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("/usr/sbin/nginx: no such program"),
            "{o:?}"
        );
        assert!(!typo.exists());
    }
);

privileged_test!(
    #[scratch = "imports-static"]
    /// A statically linked program has no import table, and the summary says so rather than
    /// guess; python3, which ran it, is an interpreter: its imports stay out of the summary
    /// and are in coverage.json.
    fn static_programs_and_interpreters(dir: TempDir) {
        let bin = build(&dir, "static_hello.c", "static_hello", &["-O2", "-static"]);
        let bin_s = bin.display().to_string();
        let profile = dir.join("p");
        let o = record(
            &profile,
            &[
                "/usr/bin/python3",
                "-c",
                "import subprocess, sys; subprocess.run([sys.argv[1]], check=True)",
                &bin_s,
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(String::from_utf8_lossy(&o.stdout).contains("static hello"));
        assert!(
            err.contains(&format!(
                "no import table (statically linked): its syscalls cannot be read ahead ({bin_s})"
            )),
            "{err}"
        );
        let cov = read_json(&profile.join("coverage.json"));
        assert_eq!(cov["programs"][&bin_s]["import_table"], "none", "{cov:#}");
        assert_eq!(
            cov["programs"][&bin_s]["imported_only"],
            serde_json::json!({}),
            "{cov:#}"
        );
        let (python, program) = cov["programs"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(p, _)| p.starts_with("/usr/bin/python3"))
            .unwrap_or_else(|| panic!("no python3 in {cov:#}"));
        assert!(
            program["runtime"]
                .as_str()
                .is_some_and(|r| r.starts_with("interpreter")),
            "{cov:#}"
        );
        // Its imports are there, many of them never called by this script...
        let only = program["imported_only"].as_object().unwrap();
        assert!(only.len() > 30, "{only:?}");
        // ...and none of them in the summary, which names python3 once, as an interpreter.
        let base = python.rsplit('/').next().unwrap();
        assert!(
            !err.lines()
                .any(|l| l.contains("imported, never called") && l.contains(python.as_str())),
            "{err}"
        );
        assert!(
            err.lines().any(|l| l
                .contains("interpreters, whose imports say little about the script:")
                && l.contains(base)),
            "{err}"
        );
    }
);

privileged_test!(
    #[scratch = "imports-runpath"]
    /// A library found only through the program's `DT_RUNPATH` (`$ORIGIN/lib`), as the loader
    /// finds it: what the library imports (getsid) is the program's, attributed to it.
    fn a_runpath_librarys_imports_are_the_programs(dir: TempDir) {
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        let lib = dir.join("lib/libsession.so");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-shared", "-fPIC", "-o"])
                .arg(&lib)
                .arg(workload("runpath_lib.c")),
        );
        let bin = dir.join("runpath_main");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&bin)
                .arg(workload("runpath_main.c"))
                .arg(format!("-L{}", dir.join("lib").display()))
                .args(["-lsession", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib"]),
        );
        let profile = dir.join("p");
        let o = record(&profile, &[bin.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("session 0"));
        let bin_s = bin.display().to_string();
        let lib_s = lib.display().to_string();
        let cov = read_json(&profile.join("coverage.json"));
        let program = &cov["programs"][&bin_s];
        assert!(
            program["objects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == lib_s.as_str()),
            "{cov:#}"
        );
        assert_eq!(
            program["imported_only"]["getsid"],
            serde_json::json!([lib_s]),
            "{cov:#}"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.lines()
                .any(|l| l.contains("imported, never called during recording: ")
                    && l.contains("getsid")
                    && l.ends_with(&format!("({bin_s})"))),
            "{err}"
        );
    }
);
