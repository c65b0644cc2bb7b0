//! `profiler generate --out DIR TRACE...`: the profiles regenerated from traces.
use std::path::{Path, PathBuf};

use crate::exit::exit_error;
use crate::profile::{self, seccomp::GenerateOptions};
use crate::trace::Trace;

pub fn generate(out: &Path, traces: &[PathBuf], options: &GenerateOptions) -> anyhow::Result<i32> {
    let loaded = traces
        .iter()
        .map(|p| Trace::load(p))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
    let profiles = profile::generate(&loaded, options);
    // A single trace is copied along so the folder stays self-describing.
    let trace = if loaded.len() == 1 {
        Some(&loaded[0])
    } else {
        None
    };
    let files = profile::render(trace, &profiles, out, options);
    let written = profile::write_atomically(out, &files, options.follow_symlinks)?;
    for p in written {
        eprintln!("profiler: wrote {}", p.display());
    }
    Ok(0)
}
