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
    check_import_sources(&profiles, options).map_err(|e| exit_error(2, format!("{e:#}")))?;
    // A single trace is copied along so the folder stays self-describing.
    let trace = if loaded.len() == 1 {
        Some(&loaded[0])
    } else {
        None
    };
    let mut files = profile::render(trace, &profiles, out, options);
    let named: Vec<(String, &Trace)> = traces
        .iter()
        .zip(&loaded)
        .map(|(p, t)| (p.display().to_string(), t))
        .collect();
    files.push(profile::coverage_file(&named, &profiles, options));
    let written = profile::write_atomically(out, &files, options.follow_symlinks)?;
    for p in written {
        eprintln!("profiler: wrote {}", p.display());
    }
    Ok(0)
}

/// `--include-imported-from` must name programs of the traces: a path that names none would
/// silently add nothing.
pub fn check_import_sources(
    profiles: &profile::Profiles,
    options: &GenerateOptions,
) -> anyhow::Result<()> {
    let unknown = profile::unknown_import_sources(profiles, options);
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = profiles
        .image
        .executable_files
        .keys()
        .map(String::as_str)
        .collect();
    anyhow::bail!(
        "--include-imported-from {}: no such program in the traces (they ran: {})",
        unknown.join(", "),
        if known.is_empty() {
            "none recorded".to_owned()
        } else {
            known.join(", ")
        }
    )
}
