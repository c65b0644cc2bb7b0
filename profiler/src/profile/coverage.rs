//! `coverage.json`: per syscall and capability, how many of the recorded runs used it and
//! which run (its command) did first; and, per syscall the programs import but no run made,
//! which programs import it and what the profile does with it (see `imported`). Written by
//! `record`, `generate` and `merge` alike. The schema only grows: readers of the first
//! version (`syscalls`, `capabilities`, `runs`) read it unchanged.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::profile::Profiles;
use crate::profile::imported::{InProfile, IncludeAction, ProgramCoverage};
use crate::profile::seccomp::GenerateOptions;
use crate::profile::seccomp::in_profile;
use crate::trace::Trace;

pub const COVERAGE_FILE: &str = "coverage.json";
pub const COVERAGE_SCHEMA: &str = "profiler.dev/coverage/v1";

#[derive(Debug, Serialize, PartialEq)]
pub struct Entry {
    /// How many of the runs used it.
    pub runs: usize,
    /// The command of the first run (in the order given) that used it.
    pub first_seen_in: String,
    /// The programs importing it (syscalls only; none for a call libc makes on its own).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub imported_by: BTreeSet<String>,
}

/// A syscall imported but never made in any run.
#[derive(Debug, Serialize, PartialEq)]
pub struct ImportedOnly {
    /// The executables whose import closure has it.
    pub imported_by: BTreeSet<String>,
    /// What the generated seccomp profile does with it.
    pub profile: ProfileAnswer,
}

#[derive(Debug, Serialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum ProfileAnswer {
    /// The default action answers (EPERM, or a kill).
    Denied,
    /// `--include-imported log` added it (SCMP_ACT_LOG).
    Logged,
    /// `--include-imported allow` added it.
    Allowed,
    /// Allowed or answered for another reason (always allowed, an ENOSYS fallback).
    AnsweredOtherwise,
}

#[derive(Debug, Serialize)]
pub struct Coverage {
    pub schema: &'static str,
    pub runs: Vec<String>,
    /// How many runs were merged (`runs` of an entry is out of this).
    pub run_count: usize,
    /// Per architecture, per syscall the profile allows because a run made it.
    pub syscalls: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Per capability in the whitelist.
    pub capabilities: BTreeMap<String, Entry>,
    /// Per architecture, the syscalls the programs import that no run made.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub imported_only: BTreeMap<String, BTreeMap<String, ImportedOnly>>,
    /// Per executable: its import table, the libraries read, whether it is an interpreter,
    /// and what it imports that no run made.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub programs: BTreeMap<String, ProgramCoverage>,
}

fn note(map: &mut BTreeMap<String, Entry>, key: &str, run: &str) {
    map.entry(key.to_owned())
        .and_modify(|e| e.runs += 1)
        .or_insert_with(|| Entry {
            runs: 1,
            first_seen_in: run.to_owned(),
            imported_by: BTreeSet::new(),
        });
}

/// Coverage of `traces` (each with the name of its run, e.g. its trace file), whose union
/// made `profiles`.
pub fn coverage(
    traces: &[(String, &Trace)],
    profiles: &Profiles,
    options: &GenerateOptions,
) -> Coverage {
    let mut c = Coverage {
        schema: COVERAGE_SCHEMA,
        runs: vec![],
        run_count: traces.len(),
        syscalls: BTreeMap::new(),
        capabilities: BTreeMap::new(),
        imported_only: BTreeMap::new(),
        programs: profiles.programs.clone(),
    };
    for (name, trace) in traces {
        let run = format!("{} ({name})", trace.workload.command.join(" "));
        c.runs.push(run.clone());
        for (arch, names) in trace.profile_syscall_names() {
            let m = c.syscalls.entry(arch.label().to_owned()).or_default();
            for n in names {
                note(m, &n, &run);
            }
        }
        let caps = crate::profile::generate(std::slice::from_ref(*trace), options).capabilities;
        for cap in caps.add {
            note(&mut c.capabilities, &cap, &run);
        }
    }
    for (path, file) in &profiles.image.executable_files {
        let (Some(imports), Some(arch)) =
            (&file.imports, file.imports.as_ref().and_then(|i| i.arch))
        else {
            continue;
        };
        let seen = c.syscalls.entry(arch.label().to_owned()).or_default();
        for name in imports.syscalls().into_keys() {
            if let Some(e) = seen.get_mut(name) {
                e.imported_by.insert(path.clone());
            }
        }
        if seen.is_empty() {
            c.syscalls.remove(arch.label());
        }
    }
    for (path, program) in &profiles.programs {
        let Some(arch) = program.arch else { continue };
        for name in program.imported_only.keys() {
            let answer = match in_profile(&profiles.seccomp, name) {
                InProfile::Denied => ProfileAnswer::Denied,
                InProfile::Included(IncludeAction::Log) => ProfileAnswer::Logged,
                InProfile::Included(IncludeAction::Allow) => ProfileAnswer::Allowed,
                InProfile::Otherwise => ProfileAnswer::AnsweredOtherwise,
            };
            c.imported_only
                .entry(arch.label().to_owned())
                .or_default()
                .entry(name.clone())
                .or_insert_with(|| ImportedOnly {
                    imported_by: BTreeSet::new(),
                    profile: answer,
                })
                .imported_by
                .insert(path.clone());
        }
    }
    c
}

/// What only some of the runs used, as `x86_64/ptrace (1 of 5 runs)`: what a reviewer of a
/// replica merge looks at first.
pub fn partial_entries(c: &Coverage) -> Vec<String> {
    let mut out = Vec::new();
    for (arch, names) in &c.syscalls {
        for (name, e) in names {
            if e.runs < c.run_count {
                out.push(format!(
                    "{arch}/{name} ({} of {} runs)",
                    e.runs, c.run_count
                ));
            }
        }
    }
    for (cap, e) in &c.capabilities {
        if e.runs < c.run_count {
            out.push(format!("{cap} ({} of {} runs)", e.runs, c.run_count));
        }
    }
    out
}

pub fn to_json(c: &Coverage) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(c).expect("coverage serialises");
    out.push(b'\n');
    out
}
