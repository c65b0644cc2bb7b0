//! The workload command resolved like execvp would, with shell-like exit codes.
use std::path::{Path, PathBuf};

use crate::exit::exit_error;

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves `program` like execvp would, before anything is started, so a typo gives a clear
/// error and exit code 127 (126 when it exists but cannot be executed), as shells do.
pub fn resolve_command(program: &str) -> anyhow::Result<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        if !p.exists() {
            return Err(exit_error(
                127,
                format!("{program}: command not found (no such file)"),
            ));
        }
        if !is_executable(&p) {
            return Err(exit_error(
                126,
                format!("{program}: not an executable file"),
            ));
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut found_non_exec = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        if candidate.exists() && found_non_exec.is_none() {
            found_non_exec = Some(candidate);
        }
    }
    match found_non_exec {
        Some(p) => Err(exit_error(
            126,
            format!("{}: not an executable file", p.display()),
        )),
        None => Err(exit_error(
            127,
            format!("{program}: command not found in PATH"),
        )),
    }
}
