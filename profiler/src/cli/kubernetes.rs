//! `profiler kubernetes node-agent`: the objects that record pods on every node (the
//! rendering is `profile::node_agent`), printed or written to a file.
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::exit::exit_error;
use crate::profile::node_agent::{NodeAgentOptions, node_agent_yaml};

pub fn node_agent(options: &NodeAgentOptions, out: Option<&Path>) -> anyhow::Result<i32> {
    let yaml = node_agent_yaml(options).map_err(|e| exit_error(2, format!("{e:#}")))?;
    match out {
        None => print!("{yaml}"),
        Some(path) => {
            write_replacing(path, yaml.as_bytes())?;
            eprintln!("profiler: wrote {}", path.display());
        }
    }
    Ok(0)
}

/// Written next to `path` under a fresh name and renamed over it: a symlink at `path` is
/// replaced, never followed, and a reader never sees half a file.
fn write_replacing(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--out {} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
