//! `profiler merge`: the union of several recordings (e.g. one per integration-test suite),
//! with per-entry coverage (`profile::coverage`): how many runs used each syscall and
//! capability, which run (its command) used it first, and what the programs import that no
//! run made.
use std::path::{Path, PathBuf};

use crate::profile;
use crate::profile::seccomp::GenerateOptions;
use crate::trace::Trace;

pub use crate::profile::coverage::COVERAGE_FILE;

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
    crate::cli::generate::check_import_sources(&profiles, options)?;
    let mut files = profile::render(None, &profiles, out, options);
    let named: Vec<(String, &Trace)> = traces
        .iter()
        .map(|(p, t)| (p.display().to_string(), t))
        .collect();
    files.push(profile::coverage_file(&named, &profiles, options));
    profile::write_atomically(out, &files, options.follow_symlinks)
}
