//! Facts read from the running kernel's BTF at start: the byte offsets the programs read
//! through BTF pointers (aya has no CO-RE for Rust programs), and a small BTF holding only
//! the attach targets.
use aya::Btf;

use crate::kernel::hooks::{self, BTF_KIND_FUNC, BTF_KIND_PTR, BTF_KIND_TYPEDEF};

fn vmlinux_btf() -> Option<btf_rs::Btf> {
    // The mmap backend reads only what the lookup needs (the cached one parses all of
    // vmlinux BTF first, most of profiler's start-up: BENCHMARKS.md, M8).
    btf_rs::Btf::from_file_with_backend("/sys/kernel/btf/vmlinux", btf_rs::Backend::Mmap).ok()
}

/// Byte offset of member `member` of `struct name`, from the running kernel's BTF.
fn member_offset(btf: &btf_rs::Btf, name: &str, member: &str) -> Option<u32> {
    member_offsets(btf, name, &[member])[0]
}

/// Byte offsets of several members of `struct name`: one lookup of the struct (a scan of all
/// of vmlinux BTF with the mmap backend, BENCHMARKS.md M8) for all of them.
fn member_offsets<const N: usize>(
    btf: &btf_rs::Btf,
    name: &str,
    members: &[&str; N],
) -> [Option<u32>; N] {
    let mut found = [None; N];
    for ty in btf.resolve_types_by_name(name).unwrap_or_default() {
        if let btf_rs::Type::Struct(st) = ty {
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
#[derive(Default)]
pub struct KernelOffsets {
    /// `task_struct.real_cred`.
    pub real_cred: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`.
    pub cgroup_id_path: [u32; 4],
    /// `task_struct.pid` and `task_struct.tgid`.
    pub pid: u32,
    pub tgid: u32,
    /// `cgroup.level`.
    pub cgroup_level: u32,
    /// `cgroup.root`: which hierarchy a cgroup is in.
    pub cgroup_root: u32,
    /// `cgroup_subsys_state.parent` and `.cgroup`, to walk up from a `struct cgroup` (whose
    /// `self` css is its first member: checked); 0: unknown.
    pub css_parent: [u32; 2],
    /// `io_kiocb.opcode` (io_uring requests).
    pub io_kiocb_opcode: u32,
    /// `linux_binprm.file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb`,
    /// `super_block.s_dev`, `inode.i_size`, `inode.i_mtime_sec`: the identity of the file an
    /// exec ran; the first 0: unknown; the last 0: no content key.
    pub exec_file_path: [u32; 7],
    /// The BTF ids of the types programs attach to: (name, BTF kind, id).
    pub attach_targets: Vec<(String, u32, u32)>,
}

/// An aya `Btf` in which each attach target has its id from the kernel's BTF.
///
/// aya looks the attach id up by name in a parsed `Btf` (`BtfTracePoint::load`), and its
/// loader already parses all of vmlinux BTF once for itself (BENCHMARKS.md, M9), with
/// no way to share that parse. This BTF has the targets at their kernel ids and a
/// nameless pointer type at every other id: the kernel only ever sees the ids.
pub fn attach_targets_btf(targets: &[(String, u32, u32)]) -> Option<Btf> {
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

impl KernelOffsets {
    pub fn read() -> KernelOffsets {
        let Some(btf) = vmlinux_btf() else {
            return KernelOffsets::default();
        };
        let [cgroups, pid, tgid, real_cred] = member_offsets(
            &btf,
            "task_struct",
            &["cgroups", "pid", "tgid", "real_cred"],
        );
        let [cgroup_kn, cgroup_level, cgroup_root, cgroup_self] =
            member_offsets(&btf, "cgroup", &["kn", "level", "root", "self"]);
        let css_parent = match (
            cgroup_self,
            member_offsets(&btf, "cgroup_subsys_state", &["parent", "cgroup"]),
        ) {
            (Some(0), [Some(parent), Some(cgroup)]) => [parent, cgroup],
            _ => [0, 0],
        };
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
        let attach_targets = hooks::btf_targets()
            .into_iter()
            .filter_map(|(name, kind)| {
                let id = btf
                    .resolve_ids_by_name(&name)
                    .ok()?
                    .into_iter()
                    .find(|id| match btf.resolve_type_by_id(*id) {
                        Ok(btf_rs::Type::Typedef(_)) => kind == BTF_KIND_TYPEDEF,
                        Ok(btf_rs::Type::Func(_)) => kind == BTF_KIND_FUNC,
                        _ => false,
                    })?;
                Some((name, kind, id))
            })
            .collect();
        KernelOffsets {
            real_cred: real_cred.unwrap_or(0),
            cgroup_id_path: cgroup_id_path.unwrap_or([0; 4]),
            pid,
            tgid,
            cgroup_level: cgroup_level.unwrap_or(0),
            cgroup_root: cgroup_root.unwrap_or(0),
            css_parent,
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
            attach_targets,
        }
    }
}
