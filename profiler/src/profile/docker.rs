//! `docker-run.txt` and `podman-run.txt` (the run flags, as shell words) and each service's
//! settings for the compose override.
use crate::profile::capabilities::CapabilityProfile;
use crate::profile::image_profile::{
    Limits, WritableMount, privileged_ports, run_as_ids, setuid_exec_suspected, writable_mounts,
};
use crate::trace::image::ImageInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

/// What production needs, engine by engine, from one profile folder.
pub struct Deployment<'a> {
    pub image: &'a ImageInfo,
    pub caps: &'a CapabilityProfile,
    /// Absolute path of seccomp.json.
    pub seccomp_path: String,
    pub limits: Limits,
    /// The sealing entrypoint's mounts, for a container whose profile has Landlock rules
    /// (None: run flags without it, and why).
    pub sealing: Result<crate::profile::landlock::Sealing, String>,
}

/// One flag of a run command: comment lines explaining it, then its words.
struct Flag {
    why: Vec<String>,
    words: Vec<String>,
}

fn flag(words: &[&str]) -> Flag {
    Flag {
        why: Vec::new(),
        words: words.iter().map(|w| w.to_string()).collect(),
    }
}

fn note(text: String) -> Flag {
    Flag {
        why: vec![text],
        words: Vec::new(),
    }
}

impl Deployment<'_> {
    fn flags(&self, engine: Engine) -> Vec<Flag> {
        let image = self.image;
        let mut out = Vec::new();
        if image.writable_directories.contains("/") {
            out.push(note(
                "--read-only left out: the workload writes files directly in /".into(),
            ));
        } else {
            out.push(flag(&["--read-only"]));
        }
        let run_as = run_as_ids(image);
        for m in writable_mounts(image) {
            match m {
                WritableMount::Tmpfs { path, owner } => {
                    let mut opts = "rw,nosuid,nodev".to_owned();
                    let mut why = Vec::new();
                    match (owner, engine) {
                        (Some((uid, gid, mode)), Engine::Docker) => {
                            opts.push_str(&format!(",uid={uid},gid={gid},mode={mode:04o}"));
                        }
                        (Some((uid, gid, mode)), Engine::Podman) => {
                            // podman 4 refuses uid=/gid=; its `U` option chowns the tmpfs to
                            // the container's user instead, which is right when that user
                            // owns the directory.
                            opts.push_str(&format!(",mode={mode:04o}"));
                            if run_as == Some((uid, gid)) {
                                opts.push_str(",U");
                            } else if (uid, gid) != (0, 0) {
                                why.push(format!(
                                    "{path} belongs to {uid}:{gid} in the image; podman cannot set a tmpfs owner other than the container user's"
                                ));
                            }
                        }
                        (None, _) => why.push(format!(
                            "owner and mode of {path} were not seen (the writer had exited): the tmpfs belongs to root"
                        )),
                    }
                    out.push(Flag {
                        why,
                        words: vec!["--tmpfs".into(), format!("{path}:{opts}")],
                    });
                }
                WritableMount::Volume { path } => out.push(Flag {
                    why: vec![format!(
                        "{path} held content in the image: an anonymous volume starts as a copy of it (owner and mode included); \
                         use a named volume to keep its data across containers"
                    )],
                    words: vec!["--volume".into(), path],
                }),
                WritableMount::Unexpressible { path } => out.push(note(format!(
                    "writable directory {} left out: a mount option cannot express its name",
                    quote_for_comment(&path)
                ))),
            }
        }
        out.push(flag(&["--cap-drop", "ALL"]));
        for c in &self.caps.add {
            out.push(flag(&["--cap-add", c.trim_start_matches("CAP_")]));
        }
        out.push(Flag {
            why: Vec::new(),
            words: vec![
                "--security-opt".into(),
                format!("seccomp={}", self.seccomp_path),
            ],
        });
        if setuid_exec_suspected(image) {
            out.push(note(
                "no-new-privileges left out: a program changed uid through exec (a setuid file?)"
                    .into(),
            ));
        } else {
            out.push(flag(&["--security-opt", "no-new-privileges"]));
        }
        match run_as {
            Some((u, g)) => {
                out.push(flag(&["--user", &format!("{u}:{g}")]));
                // A numeric --user gets no memberships from the image's /etc/group (a named
                // one does): the ones the programs ran with are added back.
                for group in &image.users.supplementary_groups {
                    out.push(flag(&["--group-add", &group.to_string()]));
                }
            }
            None => out.push(note(
                "--user left out: the workload ran as root or switched users".into(),
            )),
        }
        if engine == Engine::Podman
            && let Some(low) = privileged_ports(image, self.caps).first()
        {
            out.push(Flag {
                why: vec![format!(
                    "the workload bound port(s) {:?} under Docker, which lets containers bind any port; podman keeps 1024",
                    privileged_ports(image, self.caps)
                )],
                words: vec![
                    "--sysctl".into(),
                    format!("net.ipv4.ip_unprivileged_port_start={low}"),
                ],
            });
        }
        let l = &self.limits;
        if let (Some(m), Some(peak)) = (l.memory_bytes, l.peak_memory_bytes) {
            out.push(Flag {
                why: vec![format!(
                    "recorded memory peak {} MiB; limit with headroom ({})",
                    peak.div_ceil(1024 * 1024),
                    l.headroom
                )],
                words: vec!["--memory".into(), format!("{}m", m / 1024 / 1024)],
            });
        }
        if let (Some(p), Some(peak)) = (l.pids, l.peak_tasks) {
            out.push(Flag {
                why: vec![format!("recorded task peak {peak}")],
                words: vec!["--pids-limit".into(), p.to_string()],
            });
        }
        if l.memory_bytes.is_none() && l.pids.is_none() {
            out.push(note(
                "no resource peaks were measured (no memory/pids controller): no limits".into(),
            ));
        }
        out
    }

    /// The sealing entrypoint: the Landlock rules applied inside the container before its
    /// own entrypoint runs (Docker and podman cannot pass a Landlock ruleset themselves).
    fn seal_flags(&self) -> Vec<Flag> {
        let Ok(sealing) = &self.sealing else {
            return Vec::new();
        };
        let mut out = vec![Flag {
            why: vec![
                "sealed: profiler-seal applies landlock.json (execute only the recorded programs, write only beneath the writable".into(),
                "directories, TCP only to the recorded ports) and then runs the image's entrypoint and command; give a command".into(),
                "after the image to run another one, as with the image's own entrypoint".into(),
            ],
            words: vec!["--entrypoint".into(), crate::profile::landlock::Sealing::entrypoint()],
        }];
        for (host, inside) in sealing.mounts() {
            out.push(Flag {
                why: Vec::new(),
                words: vec!["--volume".into(), format!("{host}:{inside}:ro")],
            });
        }
        out
    }

    /// Whether the sealed variant exists (a container profile and the sealing binary).
    pub fn sealed(&self) -> bool {
        self.sealing.is_ok()
    }

    /// The `docker run` / `podman run` flags, one per line as shell words, with comments;
    /// `sealed` adds the sealing entrypoint when there is one.
    pub fn run_flags(&self, engine: Engine, sealed: bool) -> String {
        let name = match engine {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        };
        let mut out = format!(
            "# {name} run flags that hold this workload to what profiler recorded, as shell words.\n\
             # Paste them before the image name, or: eval \"{name} run $(grep -v '^#' THIS_FILE | tr '\\n' ' ') IMAGE ...\"\n\
             # --tmpfs keeps nothing across restarts: use a named volume for data that must persist.\n"
        );
        let mut flags = self.flags(engine);
        if sealed {
            match &self.sealing {
                Ok(_) => flags.extend(self.seal_flags()),
                Err(why) if why != crate::profile::landlock::NOT_A_CONTAINER => flags.push(note(
                    format!("not sealed (no Landlock inside the container): {why}"),
                )),
                Err(_) => {}
            }
        }
        for f in flags {
            for w in &f.why {
                out.push_str(&format!("# {}\n", comment_safe(w)));
            }
            if !f.words.is_empty() {
                let words: Vec<String> = f.words.iter().map(|w| shell_quote(w)).collect();
                out.push_str(&words.join(" "));
                out.push('\n');
            }
        }
        out
    }

    /// The same settings as a compose service (docker-compose file format 2.4 / 3.x keys).
    pub fn compose_service(&self) -> serde_yaml_ng::Mapping {
        use serde_yaml_ng::Value;
        let image = self.image;
        let mut m = serde_yaml_ng::Mapping::new();
        let list =
            |items: Vec<String>| Value::Sequence(items.into_iter().map(Value::String).collect());
        m.insert(
            "read_only".into(),
            Value::Bool(!image.writable_directories.contains("/")),
        );
        let mut tmpfs = Vec::new();
        let mut volumes = Vec::new();
        for w in writable_mounts(image) {
            match w {
                WritableMount::Tmpfs { path, owner } => tmpfs.push(match owner {
                    Some((u, g, mode)) => {
                        format!("{path}:rw,nosuid,nodev,uid={u},gid={g},mode={mode:04o}")
                    }
                    None => format!("{path}:rw,nosuid,nodev"),
                }),
                WritableMount::Volume { path } => volumes.push(path),
                WritableMount::Unexpressible { .. } => {}
            }
        }
        if !tmpfs.is_empty() {
            m.insert("tmpfs".into(), list(tmpfs));
        }
        if !volumes.is_empty() {
            m.insert("volumes".into(), list(volumes));
        }
        m.insert("cap_drop".into(), list(vec!["ALL".into()]));
        if !self.caps.add.is_empty() {
            m.insert(
                "cap_add".into(),
                list(
                    self.caps
                        .add
                        .iter()
                        .map(|c| c.trim_start_matches("CAP_").to_owned())
                        .collect(),
                ),
            );
        }
        let mut opts = vec![format!("seccomp={}", self.seccomp_path)];
        if !setuid_exec_suspected(image) {
            opts.push("no-new-privileges:true".into());
        }
        m.insert("security_opt".into(), list(opts));
        if let Some((u, g)) = run_as_ids(image) {
            m.insert("user".into(), Value::String(format!("{u}:{g}")));
            if !image.users.supplementary_groups.is_empty() {
                m.insert(
                    "group_add".into(),
                    list(
                        image
                            .users
                            .supplementary_groups
                            .iter()
                            .map(|g| g.to_string())
                            .collect(),
                    ),
                );
            }
        }
        if let Ok(sealing) = &self.sealing {
            m.insert(
                "entrypoint".into(),
                list(vec![crate::profile::landlock::Sealing::entrypoint()]),
            );
            let mut all: Vec<String> = match m.remove("volumes") {
                Some(Value::Sequence(v)) => v
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            for (host, inside) in sealing.mounts() {
                all.push(format!("{host}:{inside}:ro"));
            }
            m.insert("volumes".into(), list(all));
        }
        if let Some(mem) = self.limits.memory_bytes {
            m.insert(
                "mem_limit".into(),
                Value::String(format!("{}m", mem / 1024 / 1024)),
            );
        }
        if let Some(p) = self.limits.pids {
            m.insert("pids_limit".into(), Value::Number(p.into()));
        }
        m
    }
}

/// POSIX shell quoting: a word of safe characters as it is, anything else in single quotes.
pub fn shell_quote(word: &str) -> String {
    shell_words::quote(word).into_owned()
}

/// A comment line must stay one line: control characters become `?`.
pub(crate) fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub(crate) fn quote_for_comment(path: &str) -> String {
    format!("{path:?}")
}
