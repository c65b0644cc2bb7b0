//! Compose stacks, recorded without editing the compose file (the production override that
//! applies every service's profile is `profile::compose`).
//!
//! `profiler record --containers -- docker-compose [OPTIONS] up|run|create ...` (and
//! `docker compose ...`, the v2 plugin) gets one more `-f` file, written in a private
//! folder: for each service the recording cgroup as `cgroup_parent` and the recording
//! seccomp profile in `security_opt`. Compose merges a later file's keys over the earlier
//! ones, so the user's files stay as they are. Since an explicit `-f` turns off compose's
//! own file discovery, the files compose would have found are passed first, as compose finds
//! them: `COMPOSE_FILE`, else `docker-compose.yml`/`.yaml` (or `compose.yml`/`.yaml`) in the
//! project folder or the nearest parent that has one, plus its `docker-compose.override.yml`.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_yaml_ng::{Mapping, Value};

use crate::private_dir::PrivateDir;

/// File names compose looks for, in its order (compose/config/config.py SUPPORTED_FILENAMES).
const COMPOSE_FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];

/// Global options of docker-compose that take a value (the word after them is not the
/// subcommand).
const OPTIONS_WITH_VALUE: &[&str] = &[
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--project-directory",
    "--env-file",
    "-H",
    "--host",
    "-c",
    "--context",
    "--log-level",
    "--profile",
    "--ansi",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
];

/// A compose command, split into its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeCommand {
    /// `docker-compose` or `docker compose` (the words before the global options).
    pub program: Vec<String>,
    pub global: Vec<String>,
    pub subcommand: String,
    pub rest: Vec<String>,
}

/// Recognises `docker-compose ...` and `docker compose ...`.
pub fn parse(cmd: &[String]) -> Option<ComposeCommand> {
    let base = Path::new(cmd.first()?).file_name()?.to_str()?;
    let program_len = match base {
        "docker-compose" => 1,
        "docker" if cmd.get(1).map(String::as_str) == Some("compose") => 2,
        _ => return None,
    };
    let mut i = program_len;
    while i < cmd.len() {
        let a = cmd[i].as_str();
        if OPTIONS_WITH_VALUE.contains(&a) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let subcommand = cmd.get(i)?.clone();
    Some(ComposeCommand {
        program: cmd[..program_len].to_vec(),
        global: cmd[program_len..i].to_vec(),
        subcommand,
        rest: cmd[i + 1..].to_vec(),
    })
}

impl ComposeCommand {
    /// Whether this subcommand creates containers (the ones that must be recorded).
    pub fn creates_containers(&self) -> bool {
        matches!(self.subcommand.as_str(), "up" | "run" | "create")
    }

    fn option_values(&self, names: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.global.len() {
            let a = &self.global[i];
            if names.contains(&a.as_str()) {
                if let Some(v) = self.global.get(i + 1) {
                    out.push(v.clone());
                }
                i += 2;
                continue;
            }
            for n in names.iter().filter(|n| n.starts_with("--")) {
                if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                    out.push(v.to_owned());
                }
            }
            i += 1;
        }
        out
    }

    /// The compose files this command uses, as compose would find them.
    pub fn files(&self, cwd: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let given = self.option_values(&["-f", "--file"]);
        if !given.is_empty() {
            return Ok(given.iter().map(|f| cwd.join(f)).collect());
        }
        if let Some(env) = std::env::var_os("COMPOSE_FILE").filter(|v| !v.is_empty()) {
            let sep = std::env::var("COMPOSE_PATH_SEPARATOR").unwrap_or_else(|_| ":".into());
            return Ok(env
                .to_string_lossy()
                .split(sep.as_str())
                .filter(|s| !s.is_empty())
                .map(|f| cwd.join(f))
                .collect());
        }
        let start = self
            .option_values(&["--project-directory"])
            .last()
            .map(|d| cwd.join(d))
            .unwrap_or_else(|| cwd.to_path_buf());
        let mut dir = Some(start.as_path());
        while let Some(d) = dir {
            if let Some(found) = COMPOSE_FILES
                .iter()
                .map(|n| d.join(n))
                .find(|p| p.is_file())
            {
                let mut files = vec![found];
                for o in [
                    "docker-compose.override.yml",
                    "docker-compose.override.yaml",
                ] {
                    if d.join(o).is_file() {
                        files.push(d.join(o));
                        break;
                    }
                }
                return Ok(files);
            }
            dir = d.parent();
        }
        bail!(
            "no compose file found in {} or its parents (docker-compose.yml, compose.yaml)",
            start.display()
        )
    }
}

/// The services and file-format version of a stack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stack {
    /// `version:` of the first file (compose refuses override files of another version).
    pub version: Option<String>,
    pub services: Vec<String>,
    /// Services whose files already set a seccomp profile (the recording then misses what
    /// it denies).
    pub own_seccomp: Vec<String>,
}

pub fn read_stack(files: &[PathBuf]) -> anyhow::Result<Stack> {
    let mut stack = Stack::default();
    let mut services = std::collections::BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read compose file {}", f.display()))?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: not a compose file: {e}", f.display())
        })?;
        if doc.get("include").is_some() {
            // Compose v2.20+ adds the services of the files `include:` names, and whether a
            // later `-f` file may then set their keys changed between versions (refused as
            // "conflicts with imported resource" in 2.24, allowed again later: compose-go
            // #559). A service the override does not reach would run outside the recording,
            // its profile silently missing: refused, with the way around it.
            let line = text
                .lines()
                .position(|l| l.starts_with("include:"))
                .map(|n| format!(":{}:1", n + 1))
                .unwrap_or_default();
            bail!(
                "{}{line}: `include:` is not followed when recording: the services of the \
                 included files would run unrecorded; pass each of those files with -f instead",
                f.display()
            );
        }
        if i == 0 {
            stack.version = match doc.get("version") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
        }
        if let Some(Value::Mapping(m)) = doc.get("services") {
            for (name, def) in m {
                let Some(name) = name.as_str() else { continue };
                services.insert(name.to_owned());
                let seccomp = def
                    .get("security_opt")
                    .and_then(Value::as_sequence)
                    .is_some_and(|opts| {
                        opts.iter()
                            .filter_map(Value::as_str)
                            .any(|o| o.starts_with("seccomp"))
                    });
                if seccomp {
                    stack.own_seccomp.push(name.to_owned());
                }
            }
        }
    }
    stack.services = services.into_iter().collect();
    if stack.services.is_empty() {
        bail!(
            "the compose files ({}) define no services",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(stack)
}

/// The recording override: every service under the recording cgroup, with the recording
/// seccomp profile.
pub fn recording_override(stack: &Stack, cgroup_parent: &str, seccomp: &Path) -> String {
    let mut services = Mapping::new();
    for s in &stack.services {
        let mut m = Mapping::new();
        m.insert(
            "cgroup_parent".into(),
            Value::String(cgroup_parent.to_owned()),
        );
        if !stack.own_seccomp.contains(s) {
            m.insert(
                "security_opt".into(),
                Value::Sequence(vec![Value::String(format!(
                    "seccomp={}",
                    seccomp.display()
                ))]),
            );
        }
        services.insert(Value::String(s.clone()), Value::Mapping(m));
    }
    document(stack.version.as_deref(), services)
}

/// A compose file: `version:` (when the stack has one; compose refuses override files of
/// another version) and `services:`.
pub fn document(version: Option<&str>, services: Mapping) -> String {
    let mut doc = Mapping::new();
    if let Some(v) = version {
        doc.insert("version".into(), Value::String(v.to_owned()));
    }
    doc.insert("services".into(), Value::Mapping(services));
    serde_yaml_ng::to_string(&Value::Mapping(doc)).expect("a YAML mapping serialises")
}

/// A compose command rewritten to record, with the private folder holding its override.
pub struct Prepared {
    pub command: Vec<String>,
    pub stack: Stack,
}

/// Adds the recording override to a compose command that creates containers.
pub fn prepare(
    compose: &ComposeCommand,
    cgroup_parent: &str,
    seccomp: &Path,
    private: &PrivateDir,
) -> anyhow::Result<Prepared> {
    let cwd = std::env::current_dir().context("current directory")?;
    let files = compose.files(&cwd)?;
    let stack = read_stack(&files)?;
    let override_path = private.write(
        "docker-compose.recording.yml",
        recording_override(&stack, cgroup_parent, seccomp).as_bytes(),
    )?;
    let explicit = !compose.option_values(&["-f", "--file"]).is_empty();
    let mut command = compose.program.clone();
    if !explicit {
        for f in &files {
            command.push("-f".into());
            command.push(f.display().to_string());
        }
        // The project folder and name stay what compose would have chosen without -f: the
        // folder of the first file found.
    }
    command.extend(compose.global.iter().cloned());
    command.push("-f".into());
    command.push(override_path.display().to_string());
    command.push(compose.subcommand.clone());
    command.extend(compose.rest.iter().cloned());
    Ok(Prepared { command, stack })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn compose_commands_are_split_at_the_subcommand() {
        let c = parse(&words(
            "docker-compose -p demo -f a.yml --verbose up --abort-on-container-exit",
        ))
        .unwrap();
        assert_eq!(c.global, words("-p demo -f a.yml --verbose"));
        assert_eq!(c.subcommand, "up");
        assert_eq!(c.rest, words("--abort-on-container-exit"));
        assert!(c.creates_containers());
        let v2 = parse(&words("/usr/bin/docker compose --file=x.yml run app")).unwrap();
        assert_eq!(v2.program, words("/usr/bin/docker compose"));
        assert_eq!(v2.option_values(&["-f", "--file"]), ["x.yml"]);
        assert!(parse(&words("docker run x")).is_none());
        assert!(
            !parse(&words("docker-compose down"))
                .unwrap()
                .creates_containers()
        );
    }

    #[test]
    fn the_override_keeps_the_version_and_names_every_service() {
        let stack = Stack {
            version: Some("2.4".into()),
            services: vec!["app".into(), "cache".into()],
            own_seccomp: vec!["cache".into()],
        };
        let y = recording_override(
            &stack,
            "/profiler/rec-1",
            Path::new("/run/profiler/r/s.json"),
        );
        let v: Value = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(v["version"], Value::String("2.4".into()));
        assert_eq!(
            v["services"]["app"]["cgroup_parent"],
            Value::String("/profiler/rec-1".into())
        );
        assert_eq!(
            v["services"]["app"]["security_opt"][0],
            Value::String("seccomp=/run/profiler/r/s.json".into())
        );
        assert!(v["services"]["cache"].get("security_opt").is_none());
    }
}
