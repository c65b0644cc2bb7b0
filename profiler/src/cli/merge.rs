//! `profiler merge`: the union of several recordings (e.g. one per integration-test suite),
//! with per-entry coverage: how many runs used each syscall and capability, and which run
//! (its command) used it first.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::profile;
use crate::profile::seccomp::GenerateOptions;
use crate::trace::Trace;

pub const COVERAGE_FILE: &str = "coverage.json";

#[derive(Debug, Serialize, PartialEq)]
pub struct Entry {
    /// How many of the merged runs used it.
    pub runs: usize,
    /// The command of the first run (in the order given) that used it.
    pub first_seen_in: String,
}

#[derive(Debug, Serialize)]
pub struct Coverage {
    pub schema: &'static str,
    pub runs: Vec<String>,
    /// Per architecture, per syscall the profile allows.
    pub syscalls: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Per capability in the whitelist.
    pub capabilities: BTreeMap<String, Entry>,
}

fn note(map: &mut BTreeMap<String, Entry>, key: &str, run: &str) {
    map.entry(key.to_owned())
        .and_modify(|e| e.runs += 1)
        .or_insert_with(|| Entry {
            runs: 1,
            first_seen_in: run.to_owned(),
        });
}

pub fn coverage(traces: &[(PathBuf, Trace)], options: &GenerateOptions) -> Coverage {
    let mut c = Coverage {
        schema: "profiler.dev/coverage/v1",
        runs: vec![],
        syscalls: BTreeMap::new(),
        capabilities: BTreeMap::new(),
    };
    for (path, trace) in traces {
        let run = format!("{} ({})", trace.workload.command.join(" "), path.display());
        c.runs.push(run.clone());
        for (arch, names) in trace.profile_syscall_names() {
            let m = c.syscalls.entry(arch.label().to_owned()).or_default();
            for n in names {
                note(m, &n, &run);
            }
        }
        let caps = profile::generate(std::slice::from_ref(trace), options).capabilities;
        for cap in caps.add {
            note(&mut c.capabilities, &cap, &run);
        }
    }
    c
}

pub fn merge(
    out: &Path,
    inputs: &[PathBuf],
    options: &GenerateOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let traces = inputs
        .iter()
        .map(|p| {
            let t = crate::confine::diff::trace_in(p);
            Trace::load(&t).map(|trace| (t, trace))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let only: Vec<Trace> = traces.iter().map(|(_, t)| t.clone()).collect();
    let profiles = profile::generate(&only, options);
    let mut files = profile::render(None, &profiles, out, options);
    let mut cov = serde_json::to_vec_pretty(&coverage(&traces, options))?;
    cov.push(b'\n');
    files.push((COVERAGE_FILE, cov));
    profile::write_atomically(out, &files, options.follow_symlinks)
}
