//! The bundle rewrite that lets `runc run` / `crun run` be recorded (or enforced): a copy of
//! the bundle's config.json, in a private folder, with the recording cgroup and seccomp
//! profile.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use oci_spec::runtime::{LinuxSeccomp, Spec};

/// A rewritten copy of an OCI bundle's config.json, removed on drop.
pub struct RecordingBundle {
    dir: crate::private_dir::PrivateDir,
}

impl RecordingBundle {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// For `runc|crun [global flags] run|create [--bundle DIR] ID`: writes a copy of the bundle's
/// config.json whose container cgroup is `<cgroup_parent>/<ID>` (so the kernel side records
/// it) and whose seccomp filter is the recording one (unless the bundle has its own), with the
/// rootfs path made absolute, and points the command at it with `--bundle`. The user's bundle
/// is not touched. Returns None for other commands.
pub fn rewrite_bundle(
    cmd: &[String],
    cgroup_parent: &str,
    recording_seccomp: &LinuxSeccomp,
) -> anyhow::Result<Option<(Vec<String>, RecordingBundle, bool)>> {
    let Some(base) = cmd
        .first()
        .and_then(|c| Path::new(c).file_name())
        .and_then(|b| b.to_str())
    else {
        return Ok(None);
    };
    if base != "runc" && base != "crun" {
        return Ok(None);
    }
    let Some(pos) = cmd.iter().position(|a| a == "run" || a == "create") else {
        return Ok(None);
    };
    let mut rest = cmd[pos + 1..].to_vec();
    let mut bundle = PathBuf::from(".");
    if let Some(i) = rest.iter().position(|a| a == "--bundle" || a == "-b") {
        let Some(dir) = rest.get(i + 1).cloned() else {
            bail!("{base}: --bundle needs a value")
        };
        bundle = PathBuf::from(dir);
        rest.drain(i..=i + 1);
    } else if let Some(i) = rest.iter().position(|a| a.starts_with("--bundle=")) {
        bundle = PathBuf::from(&rest[i]["--bundle=".len()..]);
        rest.remove(i);
    }
    let id = rest
        .iter()
        .rev()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .with_context(|| format!("{base} {}: no container id", cmd[pos]))?;
    let bundle =
        std::fs::canonicalize(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let config = bundle.join("config.json");
    let mut spec = Spec::load(&config).with_context(|| format!("reading {}", config.display()))?;
    if let Some(root) = spec.root().clone() {
        let mut root = root;
        if root.path().is_relative() {
            root.set_path(bundle.join(root.path()));
        }
        spec.set_root(Some(root));
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!("{cgroup_parent}/{id}"))));
    let own_seccomp = linux.seccomp().is_some();
    if !own_seccomp {
        linux.set_seccomp(Some(recording_seccomp.clone()));
    }
    spec.set_linux(Some(linux));
    // A private folder: another user must not be able to swap config.json before the
    // runtime reads it.
    let recording = RecordingBundle {
        dir: crate::private_dir::PrivateDir::create("bundle")?,
    };
    let config = serde_json::to_vec_pretty(&spec).context("serialising config.json")?;
    recording.dir.write("config.json", &config)?;
    let mut out = cmd[..=pos].to_vec();
    out.push("--bundle".into());
    out.push(recording.dir.path().display().to_string());
    out.extend(rest);
    Ok(Some((out, recording, own_seccomp)))
}
