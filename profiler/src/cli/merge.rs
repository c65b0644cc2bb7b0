//! `profiler merge`: the union of several recordings (e.g. one per integration-test suite),
//! with per-entry coverage (`profile::coverage`): how many runs used each syscall and
//! capability, which run (its command) used it first, and what the programs import that no
//! run made. `--by-workload` merges the recordings of each workload's replicas apart
//! (`Trace::workload_group`: same compose service, same image and command, or same
//! command), one folder each, so that a call one replica of five made shows as 1 of 5.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::profile;
use crate::profile::coverage::{Coverage, partial_entries};
use crate::profile::seccomp::GenerateOptions;
use crate::trace::Trace;

pub use crate::profile::coverage::COVERAGE_FILE;

fn load(inputs: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Trace)>> {
    inputs
        .iter()
        .map(|p| {
            let t = crate::confine::diff::trace_in(p);
            Trace::load(&t).map(|trace| (t, trace))
        })
        .collect()
}

/// A folder's files: name and content.
type Files = Vec<(&'static str, Vec<u8>)>;

/// One merged folder's files: the union's profiles and coverage.json.
fn merged_files(
    out: &Path,
    traces: &[(PathBuf, Trace)],
    options: &GenerateOptions,
) -> anyhow::Result<(Files, Coverage)> {
    let only: Vec<Trace> = traces.iter().map(|(_, t)| t.clone()).collect();
    let profiles = profile::generate(&only, options);
    crate::cli::generate::check_import_sources(&profiles, options)?;
    let mut files = profile::render(None, &profiles, out, options);
    let named: Vec<(String, &Trace)> = traces
        .iter()
        .map(|(p, t)| (p.display().to_string(), t))
        .collect();
    let c = profile::coverage::coverage(&named, &profiles, options);
    files.push((COVERAGE_FILE, profile::coverage::to_json(&c)));
    Ok((files, c))
}

fn report_partial(dir: &Path, c: &Coverage) {
    let partial = partial_entries(c);
    if c.run_count > 1 && !partial.is_empty() {
        eprintln!(
            "profiler: {}: not used by every run: {}",
            dir.display(),
            partial.join(", ")
        );
    }
}

pub fn merge(
    out: &Path,
    inputs: &[PathBuf],
    options: &GenerateOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let traces = load(inputs)?;
    let (files, c) = merged_files(out, &traces, options)?;
    let written = profile::write_atomically(out, &files, options.follow_symlinks)?;
    report_partial(out, &c);
    Ok(written)
}

/// The recordings grouped by workload (in the order first given), with each group's folder
/// name under `out` (made one safe path component, unique).
pub fn groups(traces: Vec<(PathBuf, Trace)>) -> Vec<(String, Vec<(PathBuf, Trace)>)> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut by_key: BTreeMap<String, Vec<(PathBuf, Trace)>> = BTreeMap::new();
    for (path, trace) in traces {
        let (key, name) = trace.workload_group();
        if !by_key.contains_key(&key) {
            order.push((key.clone(), name));
        }
        by_key.entry(key).or_default().push((path, trace));
    }
    let names = crate::recording::containers::unique_names(
        order
            .iter()
            .map(|(_, n)| {
                let info = crate::trace::ContainerInfo {
                    name: n.clone(),
                    ..Default::default()
                };
                let f = crate::recording::containers::folder_name(Some(&info), None, 0);
                if f == "container-0" {
                    "workload".to_owned()
                } else {
                    f
                }
            })
            .collect(),
    );
    order
        .into_iter()
        .zip(names)
        .map(|((key, _), name)| (name, by_key.remove(&key).unwrap_or_default()))
        .collect()
}

/// `merge --by-workload`: OUT/<workload>/ for each group of replicas, written at once.
pub fn merge_by_workload(
    out: &Path,
    inputs: &[PathBuf],
    options: &GenerateOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut sets = Vec::new();
    let mut coverages = Vec::new();
    for (name, traces) in groups(load(inputs)?) {
        let dir = out.join(name);
        let (files, c) = merged_files(&dir, &traces, options)?;
        sets.push((dir.clone(), files));
        coverages.push((dir, c));
    }
    let written = profile::write_atomically_many(&sets, options.follow_symlinks)?;
    for (dir, c) in &coverages {
        report_partial(dir, c);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ContainerInfo;

    fn demo_trace() -> Trace {
        Trace::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/demo/trace.json"))
            .unwrap()
    }

    fn container(name: &str, image: &str, cmd: &[&str], service: Option<&str>) -> Trace {
        let mut t = demo_trace();
        t.cgroup.container_info = Some(ContainerInfo {
            engine: "docker".into(),
            name: name.into(),
            image: Some(image.into()),
            compose_project: service.map(|_| "shop".into()),
            compose_service: service.map(str::to_owned),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        t
    }

    #[test]
    fn replicas_group_by_service_image_and_command() {
        let web1 = container("shop-web-1", "reg/shop/web:2", &["serve"], Some("web"));
        let web2 = container("shop-web-2", "reg/shop/web:3", &["serve"], Some("web"));
        let a1 = container("a1", "reg/app@sha256:ab", &["run", "--fast"], None);
        let a2 = container("a2", "reg/app@sha256:ab", &["run", "--fast"], None);
        // Same image, another command: another workload (the argv is not joined into one
        // string, so ["run --fast"] is not ["run", "--fast"]).
        let b = container("b", "reg/app@sha256:ab", &["run --fast"], None);
        let plain = demo_trace();
        let mut other = demo_trace();
        other.workload.command = vec!["/bin/other".into()];
        let traces: Vec<(PathBuf, Trace)> = [web1, a1, plain.clone(), web2, b, a2, other, plain]
            .into_iter()
            .enumerate()
            .map(|(i, t)| (PathBuf::from(format!("t{i}")), t))
            .collect();
        let g: Vec<(String, Vec<String>)> = groups(traces)
            .into_iter()
            .map(|(name, ts)| {
                (
                    name,
                    ts.iter().map(|(p, _)| p.display().to_string()).collect(),
                )
            })
            .collect();
        let demo_cmd = demo_trace().workload.command[0].clone();
        let demo_name = demo_cmd.rsplit('/').next().unwrap().to_owned();
        assert_eq!(
            g,
            vec![
                ("web".to_owned(), vec!["t0".to_owned(), "t3".to_owned()]),
                ("app".to_owned(), vec!["t1".to_owned(), "t5".to_owned()]),
                (demo_name, vec!["t2".to_owned(), "t7".to_owned()]),
                ("app-2".to_owned(), vec!["t4".to_owned()]),
                ("other".to_owned(), vec!["t6".to_owned()]),
            ]
        );
    }

    #[test]
    fn hostile_names_make_one_path_component() {
        let mut t = demo_trace();
        t.workload.command = vec!["../../etc".into()];
        let mut u = demo_trace();
        u.workload.command = vec![String::new()];
        let g = groups(vec![(PathBuf::from("a"), t), (PathBuf::from("b"), u)]);
        for (name, _) in &g {
            assert!(
                !name.contains('/') && name != ".." && name != "." && !name.is_empty(),
                "{name}"
            );
        }
        assert_eq!(g[1].0, "workload");
    }

    #[test]
    fn partial_entries_say_how_many_runs_of_how_many() {
        let t1 = demo_trace();
        let mut t2 = demo_trace();
        // The second run did not use the first run's last x86_64 syscall.
        let x86 = t2.syscalls.get_mut(&crate::arch::Arch::X86_64).unwrap();
        let dropped = x86.pop().unwrap().name;
        let kept = x86[0].name.clone();
        let options = GenerateOptions::default();
        let profiles = crate::profile::generate(&[t1.clone(), t2.clone()], &options);
        let c = crate::profile::coverage::coverage(
            &[("one".to_owned(), &t1), ("two".to_owned(), &t2)],
            &profiles,
            &options,
        );
        assert_eq!(c.run_count, 2);
        assert_eq!(c.syscalls["x86_64"][&dropped].runs, 1);
        let partial = partial_entries(&c);
        assert!(
            partial.contains(&format!("x86_64/{dropped} (1 of 2 runs)")),
            "{partial:?}"
        );
        assert!(
            !partial
                .iter()
                .any(|p| p.starts_with(&format!("x86_64/{kept} "))),
            "{partial:?}"
        );
    }
}
