//! Facts read from the running kernel's BTF at start: the byte offsets the programs read
//! through BTF pointers (aya has no CO-RE for Rust programs), and a small BTF holding only
//! the attach targets.
use aya::Btf;

use crate::kernel::hooks::{self, BTF_KIND_FUNC, BTF_KIND_PTR, BTF_KIND_TYPEDEF};
use crate::kernel::mapped_file::MappedFile;

const BTF_KIND_STRUCT: u32 = 4;

/// The structs whose members `KernelOffsets::read` looks up.
const STRUCTS: &[&str] = &[
    "task_struct",
    "cgroup",
    "cgroup_root",
    "cgroup_subsys_state",
    "css_set",
    "kernfs_node",
    "io_kiocb",
    "inode",
    "linux_binprm",
    "file",
    "super_block",
    "cred",
    "group_info",
];

/// The kernel's own BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

fn vmlinux_btf() -> Option<btf_rs::Btf> {
    // The mmap backend reads only what the lookup needs (the cached one parses all of
    // vmlinux BTF first, most of profiler's start-up: BENCHMARKS.md, M8).
    btf_rs::Btf::from_file_with_backend(VMLINUX_BTF, btf_rs::Backend::Mmap).ok()
}

/// The kernel's BTF, opened with the mmap backend, and the ids of the named types profiler
/// needs, found in one pass (`KernelBtf::scan`): btf-rs finds a name by scanning every type,
/// once per name (BENCHMARKS.md, M16).
struct KernelBtf {
    btf: btf_rs::Btf,
    /// (name, BTF kind) -> ids, for the names asked for.
    ids: std::collections::HashMap<(String, u32), Vec<u32>>,
}

/// Bytes that follow `struct btf_type` for each kind (include/uapi/linux/btf.h), for `vlen`
/// members; None for a kind this code does not know (the scan stops there).
fn btf_type_extra(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                   // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
        _ => return None,
    })
}

impl KernelBtf {
    fn open(wanted: &[(&str, u32)]) -> Option<KernelBtf> {
        let btf = vmlinux_btf()?;
        // sysfs hands the file out a page per `read`, ten milliseconds for its megabytes; a
        // mapping is a few page faults (btf-rs maps it too).
        let raw = MappedFile::new(&std::fs::File::open(VMLINUX_BTF).ok()?)?;
        let ids = Self::scan(raw.bytes(), wanted).unwrap_or_else(|| {
            // Said, not swallowed: the programs then do without the offsets (slower, fewer
            // facts), and the trace says which hooks were used.
            eprintln!(
                "profiler: warning: /sys/kernel/btf/vmlinux has a layout or type kind this \
                 profiler does not know; kernel structure offsets are unknown"
            );
            Default::default()
        });
        Some(KernelBtf { btf, ids })
    }

    /// One pass over the type section of the raw BTF `raw` (struct btf_header, then the
    /// types, each a `struct btf_type` and its kind's members, then the strings): the ids of
    /// every type named and of the kind in `wanted`. Ids start at 1 (0 is void).
    fn scan(
        raw: &[u8],
        wanted: &[(&str, u32)],
    ) -> Option<std::collections::HashMap<(String, u32), Vec<u32>>> {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(raw.get(at..at + 4)?.try_into().ok()?))
        };
        if raw.get(0..2)? != 0xeb9fu16.to_ne_bytes() {
            return None;
        }
        let (hdr_len, type_off, type_len) = (word(4)? as usize, word(8)?, word(12)?);
        let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
        let strings = raw.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let wanted_names: std::collections::HashSet<&[u8]> =
            wanted.iter().map(|(n, _)| n.as_bytes()).collect();
        let mut ids: std::collections::HashMap<(String, u32), Vec<u32>> = Default::default();
        let (mut at, end) = (
            hdr_len + type_off as usize,
            hdr_len + type_off as usize + type_len as usize,
        );
        let mut id = 1u32;
        while at + 12 <= end {
            let (name_off, info) = (word(at)? as usize, word(at + 4)?);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            if name_off != 0 && matches!(kind, 4 | 8 | 12) {
                let name = strings.get(name_off..)?;
                let name = &name[..name.iter().position(|b| *b == 0)?];
                if wanted_names.contains(name)
                    && let Ok(name) = std::str::from_utf8(name)
                    && wanted.contains(&(name, kind))
                {
                    ids.entry((name.to_owned(), kind)).or_default().push(id);
                }
            }
            at += 12 + btf_type_extra(kind, vlen)?;
            id += 1;
        }
        Some(ids)
    }

    fn ids(&self, name: &str, kind: u32) -> &[u32] {
        self.ids
            .get(&(name.to_owned(), kind))
            .map_or(&[], Vec::as_slice)
    }
}

/// Byte offset of member `member` of `struct name`, from the running kernel's BTF.
fn member_offset(btf: &KernelBtf, name: &str, member: &str) -> Option<u32> {
    member_offsets(btf, name, &[member])[0]
}

/// Byte offsets of several members of `struct name`.
fn member_offsets<const N: usize>(
    kernel: &KernelBtf,
    name: &str,
    members: &[&str; N],
) -> [Option<u32>; N] {
    let btf = &kernel.btf;
    let mut found = [None; N];
    for id in kernel.ids(name, BTF_KIND_STRUCT) {
        if let Ok(btf_rs::Type::Struct(st)) = btf.resolve_type_by_id(*id) {
            for m in &st.members {
                let Ok(m_name) = btf.resolve_name(m) else {
                    continue;
                };
                if let Some(i) = members.iter().position(|wanted| *wanted == m_name) {
                    // The first struct of that name counts, as in a lookup by name.
                    found[i].get_or_insert(m.bit_offset() / 8);
                }
            }
        }
    }
    found
}

/// Byte offsets into kernel structures the programs read through BTF pointers (aya has no
/// CO-RE for Rust programs). 0 means unknown: the program then does without.
#[derive(Default, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelOffsets {
    /// `task_struct.real_cred`.
    pub real_cred: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`.
    pub cgroup_id_path: [u32; 4],
    /// `task_struct.pid` and `task_struct.tgid`.
    pub pid: u32,
    pub tgid: u32,
    /// `task_struct.start_boottime`.
    #[serde(default)]
    pub start_boottime: u32,
    /// `cgroup.level`.
    pub cgroup_level: u32,
    /// `cgroup.root`, `cgroup_root.hierarchy_id`: which hierarchy a cgroup is in; the first
    /// 0: unknown.
    #[serde(default)]
    pub cgroup_hierarchy_path: [u32; 2],
    /// `cgroup.self` + `cgroup_subsys_state.parent`, `cgroup_subsys_state.cgroup`,
    /// `cgroup.self`: to walk up the hierarchy through untrusted pointers; the first 0:
    /// unknown.
    #[serde(default)]
    pub cgroup_parent_path: [u32; 3],
    /// `io_kiocb.opcode` (io_uring requests).
    pub io_kiocb_opcode: u32,
    /// `linux_binprm.file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb`,
    /// `super_block.s_dev`, `inode.i_size`, `inode.i_mtime_sec`: the identity of the file an
    /// exec ran; the first 0: unknown; the last 0: no content key.
    pub exec_file_path: [u32; 7],
    /// `cred.group_info`, `group_info.ngroups`, `group_info.gid`: an exec'ing task's
    /// supplementary groups; the first 0: unknown.
    #[serde(default)]
    pub exec_groups_path: [u32; 3],
    /// The BTF ids of the types programs attach to: (name, BTF kind, id).
    pub attach_targets: Vec<(String, u32, u32)>,
}

/// The BTF programs are attached with (see [`attach_targets_btf`]): the tracepoints'
/// (`btf_trace_*` typedefs, the hooks every recording takes) made at once; the functions'
/// (fexit, the fallback where a tracepoint is missing) only once one is asked for. A
/// function's id can lie far beyond the tracepoints' (`cap_capable` 69,309 against at most
/// 29,544 on 6.18), and aya parses every id below the largest: 6 ms of start-up CPU
/// for all targets against 2.5 ms for the tracepoints alone (AMD EPYC, BENCHMARKS.md, M23).
pub struct AttachBtf {
    tracepoints: Option<Btf>,
    functions: std::sync::OnceLock<Option<Btf>>,
    targets: Vec<(String, u32, u32)>,
}

impl AttachBtf {
    /// Makes the tracepoints' BTF; all of the kernel's where the targets are unknown.
    pub fn new(targets: Vec<(String, u32, u32)>) -> AttachBtf {
        let tracepoints = Self::of_kind(&targets, BTF_KIND_TYPEDEF);
        AttachBtf {
            tracepoints,
            functions: std::sync::OnceLock::new(),
            targets,
        }
    }

    /// For `tp_btf` programs.
    pub fn tracepoints(&self) -> Option<&Btf> {
        self.tracepoints.as_ref()
    }

    /// For fexit programs.
    pub fn functions(&self) -> Option<&Btf> {
        self.functions
            .get_or_init(|| Self::of_kind(&self.targets, BTF_KIND_FUNC))
            .as_ref()
    }

    /// The small BTF of the targets of `kind`. The kernel's whole BTF only where no target is
    /// known (the scan failed): where the scan ran and found none of this kind, the kernel
    /// has none either, and a full parse (~7 ms of CPU) would not find one.
    fn of_kind(targets: &[(String, u32, u32)], kind: u32) -> Option<Btf> {
        if targets.is_empty() {
            return Btf::from_sys_fs().ok();
        }
        attach_targets_btf(targets, kind)
    }
}

/// An aya `Btf` in which each attach target of BTF kind `kind` has its id from the
/// kernel's BTF.
///
/// aya looks the attach id up by name in a parsed `Btf` (`BtfTracePoint::load`), and its
/// loader already parses all of vmlinux BTF once for itself (BENCHMARKS.md, M9), with
/// no way to share that parse. This BTF has the targets at their kernel ids and a
/// nameless pointer type at every other id: the kernel only ever sees the ids.
pub fn attach_targets_btf(targets: &[(String, u32, u32)], kind: u32) -> Option<Btf> {
    let targets: Vec<_> = targets.iter().filter(|(_, k, _)| *k == kind).collect();
    let max_id = targets.iter().map(|(_, _, id)| *id).max()?;
    let mut strings = vec![0u8];
    let mut types = Vec::with_capacity(max_id as usize * 12);
    for id in 1..=max_id {
        let (name_off, kind) = match targets.iter().find(|(_, _, i)| *i == id) {
            Some((name, kind, _)) => {
                let off = strings.len() as u32;
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                (off, *kind)
            }
            None => (0, BTF_KIND_PTR),
        };
        // struct btf_type: name_off, info (kind << 24), type; 0 is void.
        for word in [name_off, kind << 24, 0] {
            types.extend_from_slice(&word.to_ne_bytes());
        }
    }
    // struct btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
    let mut blob = Vec::with_capacity(24 + types.len() + strings.len());
    blob.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]);
    for word in [
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        blob.extend_from_slice(&word.to_ne_bytes());
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(&strings);
    Btf::parse(&blob, aya::Endianness::default()).ok()
}

/// Where [`KernelOffsets`] are kept between runs, in profiler's runtime folder: finding them
/// takes a pass over all of the kernel's BTF, some 8 ms of every start-up (AMD EPYC,
/// `PROFILER_TIMINGS`), for values that change only with the kernel (a reboot) or with
/// profiler's own build.
const OFFSETS_CACHE: &str = "kernel-offsets.json";

/// What the cached offsets depend on: this boot, the kernel's BTF, and this very build of
/// profiler (the types and members it asks for).
fn offsets_cache_key() -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    use std::os::unix::fs::MetadataExt as _;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let btf = std::fs::metadata(VMLINUX_BTF).ok()?;
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let mut h = std::hash::DefaultHasher::new();
    boot_id.hash(&mut h);
    btf.len().hash(&mut h);
    (
        exe.dev(),
        exe.ino(),
        exe.len(),
        exe.mtime(),
        exe.mtime_nsec(),
        exe.ctime(),
    )
        .hash(&mut h);
    Some(h.finish())
}

/// The cache file's content (the offsets are read back into [`CachedOffsets`]).
#[derive(serde::Serialize)]
struct CachedOffsetsRef<'a> {
    key: u64,
    offsets: &'a KernelOffsets,
}

#[derive(serde::Deserialize)]
struct CachedOffsets {
    key: u64,
    offsets: KernelOffsets,
}

impl KernelOffsets {
    /// The offsets, from this boot's cache when this build made it; else from the kernel's
    /// BTF (and then cached).
    pub fn read() -> KernelOffsets {
        let key = offsets_cache_key();
        let dir = crate::private_dir::runtime_dir().ok();
        if let (Some(key), Some(dir)) = (key, &dir)
            && let Some(offsets) = Self::from_cache(dir, key)
        {
            return offsets;
        }
        let offsets = Self::from_btf();
        if let (Some(key), Some(dir)) = (key, &dir)
            && offsets.real_cred != 0
        {
            // Best effort: without a cache the next run reads the BTF again.
            let _ = Self::save_cache(&offsets, dir, key);
        }
        offsets
    }

    fn from_cache(dir: &std::path::Path, key: u64) -> Option<KernelOffsets> {
        let file = crate::private_dir::open_cache_file(dir, OFFSETS_CACHE)?;
        let cached: CachedOffsets = serde_json::from_reader(std::io::BufReader::new(file)).ok()?;
        (cached.key == key).then_some(cached.offsets)
    }

    fn save_cache(offsets: &KernelOffsets, dir: &std::path::Path, key: u64) -> anyhow::Result<()> {
        let cached = CachedOffsetsRef { key, offsets };
        crate::private_dir::write_cache_file(dir, OFFSETS_CACHE, &serde_json::to_vec(&cached)?)
    }

    fn from_btf() -> KernelOffsets {
        let targets = hooks::btf_targets();
        let wanted: Vec<(&str, u32)> = STRUCTS
            .iter()
            .map(|s| (*s, BTF_KIND_STRUCT))
            .chain(targets.iter().map(|(name, kind)| (name.as_str(), *kind)))
            .collect();
        let Some(btf) = KernelBtf::open(&wanted) else {
            return KernelOffsets::default();
        };
        let [cgroups, pid, tgid, real_cred, start_boottime] = member_offsets(
            &btf,
            "task_struct",
            &["cgroups", "pid", "tgid", "real_cred", "start_boottime"],
        );
        let [cgroup_kn, cgroup_level, cgroup_root, cgroup_self] =
            member_offsets(&btf, "cgroup", &["kn", "level", "root", "self"]);
        let cgroup_hierarchy_path = (|| {
            Some([
                cgroup_root?,
                member_offset(&btf, "cgroup_root", "hierarchy_id")?,
            ])
        })()
        .filter(|path| path[0] != 0);
        let cgroup_parent_path = (|| {
            let [parent, cgroup] =
                member_offsets(&btf, "cgroup_subsys_state", &["parent", "cgroup"]);
            let cgroup_self = cgroup_self?;
            Some([cgroup_self + parent?, cgroup?, cgroup_self])
        })()
        .filter(|path| path[0] != 0);
        let cgroup_id_path = (|| {
            let path = [
                cgroups?,
                member_offset(&btf, "css_set", "dfl_cgrp")?,
                cgroup_kn?,
                member_offset(&btf, "kernfs_node", "id")?,
            ];
            // 0 means "unknown" to the probe; task_struct.cgroups is never the first member.
            (path[0] != 0).then_some(path)
        })();
        let (pid, tgid) = pid.zip(tgid).unwrap_or((0, 0));
        let attach_targets = targets
            .iter()
            .filter(|(_, kind)| [BTF_KIND_TYPEDEF, BTF_KIND_FUNC].contains(kind))
            .filter_map(|(name, kind)| {
                let id = *btf.ids(name, *kind).first()?;
                Some((name.clone(), *kind, id))
            })
            .collect();
        KernelOffsets {
            real_cred: real_cred.unwrap_or(0),
            cgroup_id_path: cgroup_id_path.unwrap_or([0; 4]),
            pid,
            tgid,
            start_boottime: start_boottime.unwrap_or(0),
            cgroup_level: cgroup_level.unwrap_or(0),
            cgroup_hierarchy_path: cgroup_hierarchy_path.unwrap_or([0; 2]),
            cgroup_parent_path: cgroup_parent_path.unwrap_or([0; 3]),
            io_kiocb_opcode: member_offset(&btf, "io_kiocb", "opcode").unwrap_or(0),
            exec_file_path: (|| {
                let [i_ino, i_sb, i_size, i_mtime_sec] =
                    member_offsets(&btf, "inode", &["i_ino", "i_sb", "i_size", "i_mtime_sec"]);
                let path = [
                    member_offset(&btf, "linux_binprm", "file")?,
                    member_offset(&btf, "file", "f_inode")?,
                    i_ino?,
                    i_sb?,
                    member_offset(&btf, "super_block", "s_dev")?,
                    // `i_mtime_sec` since Linux 6.7 (include/linux/fs.h); before, no
                    // content key.
                    i_size.filter(|_| i_mtime_sec.is_some()).unwrap_or(0),
                    i_mtime_sec.unwrap_or(0),
                ];
                // 0 means "unknown" to the probe; linux_binprm.file is never the first member.
                (path[0] != 0).then_some(path)
            })()
            .unwrap_or([0; 7]),
            exec_groups_path: (|| {
                let [ngroups, gid] = member_offsets(&btf, "group_info", &["ngroups", "gid"]);
                let path = [member_offset(&btf, "cred", "group_info")?, ngroups?, gid?];
                // 0 means "unknown" to the probe; cred.group_info is never the first member.
                (path[0] != 0).then_some(path)
            })()
            .unwrap_or([0; 3]),
            attach_targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets read back from the cache are the ones read from the BTF; a cache of another
    /// key, or one others could have written, is not used.
    #[test]
    fn offsets_cache_round_trip_and_rejection() {
        if !crate::private_dir::root_or_skip() {
            return;
        }
        let offsets = KernelOffsets::from_btf();
        if offsets.real_cred == 0 {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this kernel");
            return;
        }
        let dir = crate::private_dir::PrivateDir::create("offsets-test").unwrap();
        KernelOffsets::save_cache(&offsets, dir.path(), 7).unwrap();
        assert_eq!(KernelOffsets::from_cache(dir.path(), 7), Some(offsets));
        assert_eq!(
            KernelOffsets::from_cache(dir.path(), 8),
            None,
            "other key accepted"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.path().join(OFFSETS_CACHE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert_eq!(
            KernelOffsets::from_cache(dir.path(), 7),
            None,
            "a cache others can write accepted"
        );
    }

    /// The one-pass scan finds the same ids as btf-rs's own lookup by name, on this kernel.
    #[test]
    fn scan_finds_what_btf_rs_finds() {
        let Some(btf) = vmlinux_btf() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this kernel");
            return;
        };
        let targets = hooks::btf_targets();
        let mut wanted: Vec<(&str, u32)> = STRUCTS.iter().map(|s| (*s, BTF_KIND_STRUCT)).collect();
        wanted.extend(targets.iter().map(|(n, k)| (n.as_str(), *k)));
        let kernel = KernelBtf::open(&wanted).expect("the kernel's BTF scans");
        let mut found = 0;
        for (name, kind) in &wanted {
            let by_btf_rs: Vec<u32> = btf
                .resolve_ids_by_name(name)
                .unwrap_or_default()
                .into_iter()
                .filter(|id| {
                    matches!(
                        (btf.resolve_type_by_id(*id), *kind),
                        (Ok(btf_rs::Type::Struct(_)), BTF_KIND_STRUCT)
                            | (Ok(btf_rs::Type::Typedef(_)), BTF_KIND_TYPEDEF)
                            | (Ok(btf_rs::Type::Func(_)), BTF_KIND_FUNC)
                    )
                })
                .collect();
            assert_eq!(
                kernel.ids(name, *kind),
                by_btf_rs.as_slice(),
                "{name} (kind {kind})"
            );
            found += by_btf_rs.len();
        }
        assert!(found >= STRUCTS.len(), "only {found} types found");
        let offsets = KernelOffsets::read();
        assert_ne!(offsets.cgroup_id_path, [0; 4]);
        assert_ne!(offsets.exec_file_path[0], 0);
        // The cgroup-move hook returns at once without these (programs/cgroup.rs): a
        // workload leaving its cgroup would go unreported.
        assert_ne!(offsets.cgroup_hierarchy_path[0], 0);
        // (`[1]`, `cgroup_subsys_state.cgroup`, is its first member: 0 is right.)
        assert_ne!(offsets.cgroup_parent_path[0], 0);
    }
}
