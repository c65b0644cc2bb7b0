//! `landlock.json`: the Landlock rules of one image profile, in a form that still makes
//! sense on another machine or inside a container (paths in the workload's root, no file
//! descriptors, no device numbers that a new overlay mount would change).
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "profiler.dev/landlock/v1";

/// The rules file's name, next to the sealing binary in a container.
pub const RULES_FILE: &str = "landlock.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub schema: String,
    /// Programs the workload was recorded running. Their ELF loaders and script
    /// interpreters are found when the rules are resolved (the kernel opens those for
    /// execution itself: fs/binfmt_elf.c, fs/binfmt_script.c).
    pub execute: Vec<Executable>,
    /// Directories the workload wrote beneath (writes, creation, removal, renames,
    /// truncation are allowed only there).
    pub write_beneath: Vec<String>,
    /// Other files it wrote in place (its own `/proc/self/…` entries).
    #[serde(default)]
    pub write_files: Vec<String>,
    pub bind_tcp: Vec<u16>,
    pub connect_tcp: Vec<u16>,
    /// Abstract unix sockets and signals stay within the workload (Landlock ABI 6).
    pub scope_abstract_unix: bool,
    pub scope_signals: bool,
    /// What profiler left out while making the rules, and why (shown again when sealing).
    #[serde(default)]
    pub notes: Vec<String>,
    /// For a container: its entrypoint and command as recorded (`docker inspect`'s
    /// Config.Entrypoint and Config.Cmd). The sealing binary runs `entrypoint` followed by its
    /// own arguments, or by `cmd` when it got none: the same rule Docker applies to an
    /// image's entrypoint and a run's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
}

/// A recorded program and what identified the file the kernel executed there.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Executable {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Rules {
    /// Reads and checks a rules file; an error names the file and the position.
    pub fn parse(text: &str, origin: &str) -> Result<Rules, String> {
        let rules: Rules = serde_json::from_str(text)
            .map_err(|e| format!("{origin}:{}:{}: {e}", e.line(), e.column()))?;
        if rules.schema != SCHEMA {
            return Err(format!(
                "{origin}: schema {:?} is not {SCHEMA:?}",
                rules.schema
            ));
        }
        Ok(rules)
    }

    /// The argument vector a sealed container runs, given the sealing binary's own arguments.
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let mut out = self.entrypoint.clone();
        if args.is_empty() {
            out.extend(self.cmd.iter().cloned());
        } else {
            out.extend(args.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_follows_dockers_entrypoint_rule() {
        let r = Rules {
            schema: SCHEMA.into(),
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["postgres".into()],
            ..Default::default()
        };
        assert_eq!(r.command(&[]), ["/docker-entrypoint.sh", "postgres"]);
        assert_eq!(
            r.command(&["psql".into()]),
            ["/docker-entrypoint.sh", "psql"]
        );
        let bad = Rules::parse("{\"schema\": \"x\"", "f.json").unwrap_err();
        assert!(bad.starts_with("f.json:1:"), "{bad}");
        let unknown = Rules::parse(
            &format!("{{\"schema\":\"{SCHEMA}\",\"execute\":[],\"write_beneath\":[],\"bind_tcp\":[],\"connect_tcp\":[],\"scope_abstract_unix\":true,\"scope_signals\":true,\"allow_all\":true}}"),
            "f.json",
        )
        .unwrap_err();
        assert!(unknown.contains("allow_all"), "{unknown}");
    }
}
