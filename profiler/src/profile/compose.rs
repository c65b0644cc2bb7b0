//! `docker-compose.profile.yml`: the production settings of every recorded compose service
//! (from `docker::Deployment::compose_service`), as an override of the user's compose file.
use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use crate::recording::compose::document;

/// `docker-compose.profile.yml`: every recorded service's production settings, to use as
/// `docker-compose -f docker-compose.yml -f docker-compose.profile.yml up`.
pub fn production_override(version: Option<&str>, services: &BTreeMap<String, Mapping>) -> String {
    let v3 = version.is_some_and(|v| v.starts_with('3'));
    let mut out = Mapping::new();
    for (name, settings) in services {
        let mut s = settings.clone();
        if v3 {
            // Format 3 moved limits under deploy (honoured by `docker-compose --compatibility`).
            let mem = s.remove("mem_limit");
            s.remove("pids_limit");
            if let Some(mem) = mem {
                let mut limits = Mapping::new();
                limits.insert("memory".into(), mem);
                let mut resources = Mapping::new();
                resources.insert("limits".into(), Value::Mapping(limits));
                let mut deploy = Mapping::new();
                deploy.insert("resources".into(), Value::Mapping(resources));
                s.insert("deploy".into(), Value::Mapping(deploy));
            }
        }
        out.insert(Value::String(name.clone()), Value::Mapping(s));
    }
    format!(
        "# Made by profiler from a recording: every service held to what it was recorded doing.\n\
         #   docker-compose -f docker-compose.yml -f docker-compose.profile.yml up\n{}",
        document(version, out)
    )
}
