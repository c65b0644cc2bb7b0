//! The kernel side: the eBPF object loaded and attached ([`Probes`]), its maps read back.
//!
//! Kernels differ: under lockdown fentry, fexit and LSM programs can fail to load (EPERM)
//! and bpf_probe_read_kernel be refused, while tp_btf and raw_tp work. So every hook of
//! [`hooks::HOOKS`] is tried in order of preference and the one that attached is recorded in
//! the trace (`probes`). Links are owned by file descriptors (no pinning): if profiler dies,
//! the kernel detaches everything.
pub mod audit;
pub mod btf;
pub mod diagnostics;
pub mod events;
pub mod hooks;
pub mod host;
pub mod kallsyms;
pub mod mapped_file;
pub mod record_table;
use std::collections::BTreeMap;
use std::os::fd::AsFd as _;

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, StackTraceMap},
};
use profiler_common::{
    ARCH_COUNT, CAP_TOP_FRAMES, CapDepthKey, CapDepthPath, CapKey, LOSS_CAP_MAP_FULL,
    LOSS_CAP_STACK, LOSS_CGROUP_MAP_FULL, PHASE_COUNT, SYSCALL_SLOTS,
};

use crate::arch::Arch;
use crate::kernel::btf::{AttachBtf, KernelOffsets};
pub use crate::kernel::host::{check_privileges, ensure_kernel_filesystems};
use crate::kernel::record_table::RecordTable;

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler"));

/// What the kernel side saw for one cgroup.
#[derive(Default)]
pub struct Collected {
    pub cgroup_id: u64,
    /// Syscall numbers per architecture, each with the phases (`PHASE_*`) it was seen in.
    pub syscalls: BTreeMap<Arch, Vec<(u32, Vec<usize>)>>,
    pub seccomp_loads: u32,
    /// Argument values per phase index.
    pub args: Vec<(usize, profiler_common::ArgRecord)>,
    /// (key, checks, stack frames, how many of the checks were counted by depth).
    pub cap_checks: Vec<(CapKey, u64, Vec<u64>, u64)>,
    pub out_of_range: u64,
    pub cap_map_full: u64,
    pub cap_stack_missing: u64,
    pub cgroup_map_full: u64,
    pub events_lost: u64,
    /// io_uring operations submitted: bit `op` set for `IORING_OP_<op>`.
    pub io_uring_ops: u64,
}

pub struct Probes {
    ebpf: Ebpf,
    /// After `ebpf`: dropped once the programs are detached, with a last read of the log.
    #[allow(dead_code, reason = "held for its Drop")]
    kernel_log: Option<diagnostics::KernelLog>,
    records: RecordTable,
    /// Under `PROFILER_TIMINGS`: the kernel counts each program's runs and run time while
    /// this is held (`BPF_ENABLE_STATS`); they are printed when the probes are dropped. The
    /// count costs two clock reads per run, so only then.
    run_stats: Option<std::os::fd::OwnedFd>,
    /// The kernel's loss counters (cap map full, stack missing, cgroup table full) when each
    /// recording started: its losses are what they grew by since (they are per loaded
    /// object, and `profiler serve` records many cgroups one after another).
    loss_baseline: BTreeMap<u64, [u64; 3]>,
    /// Whether the capability hook compares the checked credentials with the task's own.
    pub cred_check: bool,
    pub syscall_hook: String,
    pub cap_hook: Option<String>,
    /// Why each capability hook that was tried failed (shown when none attached).
    pub cap_hook_errors: Vec<String>,
    /// Optional hooks (forks, cgroup moves) that could not be attached, and why.
    pub optional_hook_errors: Vec<String>,
    /// Execs are judged by the file the kernel ran (tp_btf sched_process_exec with the BTF
    /// offsets to it), not by the path asked for.
    exec_by_file: bool,
}

/// The capability hook's `DIRECT_NOAUDIT` map, for another thread: until it is filled every
/// check walks its stack.
pub struct DirectNoauditCallers(aya::maps::Array<MapData, [u64; 2]>);

impl DirectNoauditCallers {
    /// Writes the kernel text ranges of `profiler_common::DIRECT_NOAUDIT_FUNCTIONS`;
    /// `cap_capable` (entry 0) last, as the hook starts using the others once it is there.
    pub fn fill(&mut self, ranges: &kallsyms::DirectNoauditRanges) {
        // A caller may not appear as a frame of its own (on this project's kernels
        // cap_capable's caller on the stack is security_vm_enough_memory_mm), but one must.
        if ranges[0].0 == 0 || ranges[1..].iter().all(|r| r.0 == 0) {
            crate::timings::mark("capability checks walk: no unaudited callers in kallsyms");
            return;
        }
        for (i, (start, end)) in ranges.iter().enumerate().rev() {
            let _ = self.0.set(i as u32, [*start, *end], 0);
        }
        crate::timings::mark("capability hook told the unaudited callers");
    }
}

/// An `EbpfLoader` that did not parse the kernel's BTF.
///
/// aya 0.14's `EbpfLoader::new()` always parses all of `/sys/kernel/btf/vmlinux`, tens of
/// milliseconds of start-up (BENCHMARKS.md, M16), and uses it for one thing only: CO-RE
/// relocations (`relocate_btf`), of which this object has none (aya-ebpf programs read
/// kernel structures at offsets userspace looks up, `KernelOffsets`). The attach targets are
/// passed to each program's `load` separately. aya offers no way to skip the parse, so it is
/// made to fail at once: on this thread only (`unshare(CLONE_FS | CLONE_NEWNS)` gives the
/// thread a mount namespace of its own; the rest of profiler keeps the host's), the file is
/// covered by an empty one first. If any of that is refused, the loader parses as usual.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let hidden = unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .and_then(|()| {
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
        })
        .and_then(|()| {
            mount(
                Some("/dev/null"),
                "/sys/kernel/btf/vmlinux",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        });
    if let Err(e) = hidden {
        crate::timings::mark(&format!("kernel BTF not hidden from aya's loader ({e})"));
    }
    EbpfLoader::new()
}

impl Drop for Probes {
    fn drop(&mut self) {
        // aya detaches the programs in no fixed order: once the fork or cgroup-move hook is
        // gone, nothing would tell the syscall hook's cache that an entry went stale.
        if !self.records.disable_task_cache() {
            crate::timings::mark("the syscall cache could not be switched off before detaching");
        }
        if self.run_stats.take().is_some() {
            mark_run_stats(&self.ebpf);
        }
    }
}

/// What each program of `ebpf` cost, in the kernel's own count (kernel/bpf/syscall.c,
/// `bpf_prog_get_info_by_fd`: run_cnt, run_time_ns, kept while `BPF_ENABLE_STATS` is held),
/// with the count's own two clock reads per run included; a `PROFILER_TIMINGS` line each.
fn mark_run_stats(ebpf: &Ebpf) {
    for (name, program) in ebpf.programs() {
        if let Ok(info) = program.info()
            && info.run_count() > 0
        {
            let ns = info.run_time().as_nanos() as f64;
            crate::timings::mark(&format!(
                "eBPF {name}: {} runs, {:.1} ms, {:.1} ns a run",
                info.run_count(),
                ns / 1e6,
                ns / info.run_count() as f64
            ));
        }
    }
}

/// A file `profiler enforce` lets run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecFile {
    /// This very file (device as `stat` gives it, inode).
    OnThisMachine { dev: u64, ino: u64 },
    /// A container image's file, by the size and mtime it came with: its device and inode
    /// depend on how the engine stores the image (a new overlay with each container, a
    /// copied root for a plain bundle).
    FromImage { size: u64, mtime: i64 },
}

/// A device number as `stat` gives it (glibc's encoding, `makedev`) in the kernel's own
/// `dev_t` encoding (include/linux/kdev_t.h: `MAJOR << 20 | MINOR`), as `super_block.s_dev`
/// holds it.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let (major, minor) = (libc::major(st_dev) as u64, libc::minor(st_dev) as u64);
    (major << 20) | minor
}

impl Probes {
    /// Loads the object and attaches the syscall, exec and capability hooks.
    ///
    /// `recording_level` is the cgroup2 level of the recording cgroups when cgroups created
    /// below them (containers) must be discovered and recorded too, 0 otherwise.
    pub fn attach(recording_level: i32) -> anyhow::Result<Probes> {
        Self::attach_enforcing(recording_level, 0)
    }

    /// [`Probes::attach`] for recording one cgroup alone (nothing discovered below it): a
    /// record table of [`profiler_common::RECORD_SLOTS_ONE_CGROUP`] slots.
    pub fn attach_one_cgroup() -> anyhow::Result<Probes> {
        Self::load(0, 0, profiler_common::RECORD_SLOTS_ONE_CGROUP)
    }

    /// Like [`Probes::attach`], with `profiler enforce`'s exec check on (`ENFORCE_*`).
    pub fn attach_enforcing(recording_level: i32, enforce: u32) -> anyhow::Result<Probes> {
        Self::load(recording_level, enforce, profiler_common::RECORD_SLOTS)
    }

    /// Loads and attaches with a record table of `record_slots` slots.
    fn load(recording_level: i32, enforce: u32, record_slots: u32) -> anyhow::Result<Probes> {
        crate::timings::mark("loading the probes");
        ensure_kernel_filesystems();
        let log_level = diagnostics::level()?;
        // aya's loader is made on a thread of its own while the offsets and attach ids are
        // looked up (BENCHMARKS.md, M9), and without the full parse of the kernel's BTF it
        // would make (`loader_without_kernel_btf`).
        // The loader comes back over a channel, not by joining the thread: the thread's end
        // frees its mount namespace, and that waits for an expedited RCU grace period
        // (fs/namespace.c, `namespace_unlock()`), 1-4 ms that start-up need not wait for
        // (AMD EPYC, BENCHMARKS.md, M23).
        let (loader_sender, loader) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = loader_sender.send(loader_without_kernel_btf());
        });
        let offsets = KernelOffsets::read();
        crate::timings::mark("offsets read");
        // Attaching needs only the ids of a few types; a BTF holding just those (see
        // `attach_targets_btf`) spares a full parse. Programs need it only once the object
        // is loaded: it is made meanwhile.
        let attach_targets = offsets.attach_targets.clone();
        let btf = std::thread::spawn(move || AttachBtf::new(attach_targets));
        let KernelOffsets {
            real_cred: real_cred_offset,
            cgroup_id_path,
            pid: pid_off,
            tgid: tgid_off,
            start_boottime,
            cgroup_level,
            cgroup_hierarchy_path,
            cgroup_parent_path,
            io_kiocb_opcode,
            exec_file_path,
            exec_groups_path,
            ..
        } = offsets;
        let mut loader: EbpfLoader<'_> = loader
            .recv()
            .map_err(|_| anyhow::anyhow!("making aya's loader failed (thread panicked)"))?;
        crate::timings::mark("aya loader received");
        if log_level == 0 {
            // Nothing is logged: the smallest ring buffer the kernel takes (one page) instead
            // of aya-log's 128 KiB.
            loader.map_max_entries("AYA_LOGS", 4096);
        }
        loader.map_max_entries("RECORDS", record_slots);
        if enforce == 0 {
            // Only `profiler enforce` uses these; preallocated hash maps cost time to create.
            loader
                .map_max_entries("ALLOWED_EXECS", 1)
                .map_max_entries("ALLOWED_INODES", 1)
                .map_max_entries("EXEC_VERDICT", 1);
        }
        // The syscall hook's cache needs the fork and cgroup-move hooks, which need the task
        // offsets; with it, its misses read the cgroup id by helper (see the eBPF global).
        let has_target = |name: &str| offsets.attach_targets.iter().any(|(n, _, _)| n == name);
        let cgroup_by_helper: u32 = (pid_off != 0
            && tgid_off != 0
            && has_target("btf_trace_sched_process_fork")
            && has_target("btf_trace_cgroup_attach_task"))
            as u32;
        let mut ebpf = loader
            .override_global("CGROUP_BY_HELPER", &cgroup_by_helper, true)
            .override_global("RECORDING_LEVEL", &recording_level, true)
            .override_global("RECORD_TABLE_SLOTS", &record_slots, true)
            .override_global("TASK_REAL_CRED_OFFSET", &real_cred_offset, true)
            .override_global("CGROUP_ID_PATH", &cgroup_id_path, true)
            .override_global("CGROUP_LEVEL_OFFSET", &cgroup_level, true)
            .override_global("CGROUP_HIERARCHY_PATH", &cgroup_hierarchy_path, true)
            .override_global("CGROUP_PARENT_PATH", &cgroup_parent_path, true)
            .override_global("IO_KIOCB_OPCODE_OFFSET", &io_kiocb_opcode, true)
            .override_global("EXEC_FILE_PATH", &exec_file_path, true)
            .override_global("EXEC_GROUPS_PATH", &exec_groups_path, true)
            .override_global("TASK_PID_OFFSET", &pid_off, true)
            .override_global("ENFORCE", &enforce, true)
            .override_global("TASK_TGID_OFFSET", &tgid_off, true)
            .override_global("TASK_START_BOOTTIME_OFFSET", &start_boottime, true)
            // aya-log-ebpf's own global (aya-log-ebpf 0.2.0, `macro_support::AYA_LOG_LEVEL`).
            .override_global("AYA_LOG_LEVEL", &log_level, true)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (maps) failed")?;
        let kernel_log = diagnostics::KernelLog::start(&mut ebpf, log_level)?;
        crate::timings::mark("eBPF object loaded, maps created");
        let btf = btf
            .join()
            .map_err(|_| anyhow::anyhow!("making the attach targets' BTF failed (panicked)"))?;
        let mut records = match ebpf.map("RECORDS") {
            Some(aya::maps::Map::Array(data)) => RecordTable::map(data.fd(), record_slots)?,
            _ => bail!("map RECORDS missing from the eBPF object, or not an array"),
        };
        match hooks::load_epoch_program(&mut ebpf) {
            Ok(program) => records.set_epoch_program(program),
            Err(e) => crate::timings::mark(&format!("syscall cache off: {e:#}")),
        }

        if let Some(btf) = btf.tracepoints() {
            hooks::verify_in_parallel(&mut ebpf, btf, &hooks::preferred_btf_programs(pid_off != 0));
            crate::timings::mark("programs verified");
        }
        // Every hook of the table, in its order: the first candidate that attaches wins.
        let mut syscall_hook = None;
        let mut cap_hook = None;
        let mut cap_hook_errors = Vec::new();
        let mut exec_hook = None;
        let mut optional_hook_errors = Vec::new();
        let mut attached = Vec::new();
        for hook in hooks::HOOKS {
            if hook.needs_task_offsets && pid_off == 0 {
                optional_hook_errors.push(format!(
                    "{:?}: the kernel's BTF does not give task_struct's pid/tgid offsets",
                    hook.point
                ));
                continue;
            }
            // The functions' BTF is made only for an fexit fallback (`AttachBtf`).
            let btf_for = |how| match how {
                hooks::Attach::FExit(..) => btf.functions(),
                hooks::Attach::TpBtf(..) | hooks::Attach::RawTp(..) => btf.tracepoints(),
            };
            match hooks::attach_first(&mut ebpf, btf_for, hook) {
                Ok(label) => {
                    attached.push(hook.point);
                    match hook.point {
                        hooks::Point::Syscalls => syscall_hook = Some(label),
                        hooks::Point::Capabilities => cap_hook = Some(label),
                        hooks::Point::Exec => exec_hook = Some(label),
                        _ => {}
                    }
                }
                Err(errors) if hook.required => bail!(
                    "cannot attach a {:?} probe on this kernel:\n  {}",
                    hook.point,
                    errors.join("\n  ")
                ),
                // Said, not swallowed: what each optional hook could not do.
                Err(errors) if hook.point == hooks::Point::Capabilities => cap_hook_errors = errors,
                // A speed-up only: without it every capability check walks its stack.
                Err(errors) if hook.point == hooks::Point::Migrations => crate::timings::mark(
                    &format!("no migration hook, checks walk: {}", errors.join("; ")),
                ),
                Err(errors) => optional_hook_errors.extend(errors),
            }
            if hook.point == hooks::Point::Syscalls {
                crate::timings::mark("sys_enter verified and attached");
            }
        }
        let syscall_hook = syscall_hook.context("the syscall hook is required")?;
        let run_stats = crate::timings::enabled()
            .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).ok())
            .flatten();
        // The syscall hook caches each task's slot (`cached_record`) only when the
        // hooks that tell it when a cached slot goes stale are in place.
        if syscall_hook == "tp_btf/sys_enter"
            && attached.contains(&hooks::Point::Fork)
            && attached.contains(&hooks::Point::CgroupMove)
        {
            records.enable_task_cache(attached.contains(&hooks::Point::Migrations));
        }
        Ok(Probes {
            ebpf,
            kernel_log,
            records,
            run_stats,
            loss_baseline: BTreeMap::new(),
            cred_check: real_cred_offset != 0 && cap_hook.as_deref() == Some("tp_btf/cap_capable"),
            syscall_hook,
            cap_hook,
            cap_hook_errors,
            optional_hook_errors,
            exec_by_file: exec_file_path[0] != 0
                && exec_hook.as_deref() == Some("tp_btf/sched_process_exec"),
        })
    }

    /// Starts recording a cgroup (a recording of its own; cgroups discovered below it point
    /// at it) whose processes are already running or started by someone else.
    pub fn track(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        self.start_recording(cgroup_id, false)
    }

    /// Starts recording a cgroup whose first process profiler is about to start there: what
    /// that process does before it execs the workload is profiler's, not recorded.
    pub fn track_from_exec(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        self.start_recording(cgroup_id, true)
    }

    /// Starts recording a cgroup that already runs its workload (`record --attach`,
    /// `watch --attach`): everything from now on counts as the workload's.
    pub fn track_running(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        self.records
            .insert_in_phase(cgroup_id, false, profiler_common::PHASE_WORKLOAD as u32)?;
        let now = self.loss_counters();
        self.loss_baseline.insert(cgroup_id, now);
        Ok(())
    }

    fn start_recording(&mut self, cgroup_id: u64, awaiting_exec: bool) -> anyhow::Result<()> {
        self.records.insert(cgroup_id, awaiting_exec)?;
        let now = self.loss_counters();
        self.loss_baseline.insert(cgroup_id, now);
        Ok(())
    }

    /// The loss counters, summed over CPUs: (cap map full, stack missing, cgroup table full).
    fn loss_counters(&self) -> [u64; 3] {
        let Some(Ok(losses)) = self
            .ebpf
            .map("LOSSES")
            .map(PerCpuArray::<&MapData, u64>::try_from)
        else {
            return [0; 3];
        };
        let sum = |i: u32| -> u64 { losses.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        [
            sum(LOSS_CAP_MAP_FULL),
            sum(LOSS_CAP_STACK),
            sum(LOSS_CGROUP_MAP_FULL),
        ]
    }

    /// Fills the allowed-executables map of `profiler enforce`.
    pub fn allow_execs<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, profiler_common::ExecPath, u8> = HashMap::try_from(
            self.ebpf
                .map_mut("ALLOWED_EXECS")
                .context("map ALLOWED_EXECS missing")?,
        )?;
        for p in paths {
            let mut key = [0u8; profiler_common::EVENT_PATH_LEN];
            let bytes = p.as_bytes();
            if bytes.len() >= key.len() {
                continue;
            }
            key[..bytes.len()].copy_from_slice(bytes);
            map.insert(key, 1, 0)?;
        }
        Ok(())
    }

    /// Whether execs are judged by the file the kernel ran (the kernel's BTF gave the way to
    /// it), rather than by the path asked for.
    pub fn judges_execs_by_file(&self) -> bool {
        self.exec_by_file
    }

    /// Files the profile allows to be executed (see [`ExecFile`]).
    pub fn allow_files(&mut self, files: impl IntoIterator<Item = ExecFile>) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, [u64; 2], u8> = HashMap::try_from(
            self.ebpf
                .map_mut("ALLOWED_INODES")
                .context("map ALLOWED_INODES missing")?,
        )?;
        for f in files {
            let key = match f {
                ExecFile::OnThisMachine { dev, ino } => [kernel_dev(dev), ino],
                ExecFile::FromImage { size, mtime } => {
                    [profiler_common::CONTENT_KEY | size, mtime as u64]
                }
            };
            map.insert(key, 1, 0)?;
        }
        Ok(())
    }

    /// Removes `keys` from the hash map `name` (entries already collected).
    fn remove_keys<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
        keys: &[K],
    ) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, K, V> = HashMap::try_from(
            self.ebpf
                .map_mut(name)
                .with_context(|| format!("map {name} missing"))?,
        )?;
        for key in keys {
            let _ = map.remove(key);
        }
        Ok(())
    }

    /// What lets the capability hook know most checks without walking their stacks, for a
    /// thread that reads /proc/kallsyms meanwhile (see `profiler-ebpf/src/capabilities.rs`).
    /// `PROFILER_CAP_WALK_EVERY_CHECK=1` leaves the map empty: no check is known by its
    /// depth, every one walks its innermost frames (and its whole stack once per path), as
    /// before depths: the reference the tests compare the counts with.
    pub fn direct_noaudit_callers(&self) -> Option<DirectNoauditCallers> {
        if std::env::var_os("PROFILER_CAP_WALK_EVERY_CHECK").is_some_and(|v| v == "1") {
            return None;
        }
        let Some(aya::maps::Map::Array(data)) = self.ebpf.map("DIRECT_NOAUDIT") else {
            return None;
        };
        let fd = data.fd().as_fd().try_clone_to_owned().ok()?;
        let map = MapData::from_fd(fd).ok()?;
        aya::maps::Array::try_from(aya::maps::Map::Array(map))
            .ok()
            .map(DirectNoauditCallers)
    }

    /// The event ring buffer, for the caller to drain while the workload runs.
    pub fn take_events(&mut self) -> anyhow::Result<aya::maps::RingBuf<MapData>> {
        Ok(aya::maps::RingBuf::try_from(
            self.ebpf.take_map("EVENTS").context("map EVENTS missing")?,
        )?)
    }

    /// Reads everything recorded for the recording cgroup `recording_id` and for every
    /// cgroup discovered below it, and forgets them in the kernel. The recording cgroup
    /// itself comes first.
    /// What recording `recording_id` has seen so far, leaving it recording: the syscall
    /// bitmaps and io_uring operations as they are, the capability checks without
    /// forgetting them (`profiler watch`).
    pub fn snapshot(&mut self, recording_id: u64) -> anyhow::Result<Vec<Collected>> {
        let records = self.records.snapshot_recording(recording_id);
        self.collect_records(recording_id, records, false)
    }

    pub fn collect(&mut self, recording_id: u64) -> anyhow::Result<Vec<Collected>> {
        let records = self.records.take_recording(recording_id);
        self.collect_records(recording_id, records, true)
    }

    fn collect_records(
        &mut self,
        recording_id: u64,
        records: Vec<profiler_common::CgroupRecord>,
        forget: bool,
    ) -> anyhow::Result<Vec<Collected>> {
        let mut out: Vec<Collected> = Vec::new();
        {
            for record in records {
                let mut c = Collected {
                    cgroup_id: record.cgroup_id,
                    out_of_range: record.out_of_range,
                    seccomp_loads: record.seccomp_loads,
                    args: record.args.iter().copied().enumerate().collect(),
                    ..Default::default()
                };
                for slot in 0..ARCH_COUNT {
                    let arch = Arch::from_slot(slot).expect("slot");
                    let nrs: Vec<(u32, Vec<usize>)> = (0..SYSCALL_SLOTS)
                        .filter_map(|nr| {
                            let phases: Vec<usize> = (0..PHASE_COUNT)
                                .filter(|&p| record.syscalls[p][slot][nr] != 0)
                                .collect();
                            (!phases.is_empty()).then_some((nr as u32, phases))
                        })
                        .collect();
                    if !nrs.is_empty() {
                        c.syscalls.insert(arch, nrs);
                    }
                }
                out.push(c);
            }
        }
        out.sort_by_key(|c| (c.cgroup_id != recording_id, c.cgroup_id));

        let checks: HashMap<&MapData, CapKey, u64> = HashMap::try_from(
            self.ebpf
                .map("CAP_CHECKS")
                .context("map CAP_CHECKS missing")?,
        )?;
        let stacks = StackTraceMap::try_from(
            self.ebpf
                .map("CAP_STACKS")
                .context("map CAP_STACKS missing")?,
        )?;
        // A stack's return addresses; none for a negative id or a stack the map lacks.
        let frames_of = |stack_id: i32| -> Vec<u64> {
            u32::try_from(stack_id)
                .ok()
                .and_then(|id| stacks.get(&id, 0).ok())
                .map(|st| st.frames().iter().map(|f| f.ip).collect())
                .unwrap_or_default()
        };
        let mut done_checks = Vec::new();
        for entry in checks.iter() {
            let (key, count) = entry?;
            let Some(c) = out.iter_mut().find(|c| c.cgroup_id == key.cgroup_id) else {
                continue;
            };
            let mut frames = frames_of(key.stack_id);
            if frames.is_empty() {
                // The stack map had no room for this stack (a hash-bucket collision): the
                // innermost frames still say which kernel function asked, and so whether the
                // check was audited.
                frames = key
                    .top_frames
                    .iter()
                    .copied()
                    .take_while(|ip| *ip != 0)
                    .collect();
            }
            c.cap_checks.push((key, count, frames, 0));
            done_checks.push(key);
        }
        // Checks known by their depth were counted there, charged to their depth's first
        // stack (see profiler-ebpf/src/capabilities.rs).
        let depths: HashMap<&MapData, CapDepthKey, CapDepthPath> = HashMap::try_from(
            self.ebpf
                .map("CAP_DEPTHS")
                .context("map CAP_DEPTHS missing")?,
        )?;
        let mut done_depths = Vec::new();
        for entry in depths.iter() {
            let (key, path) = entry?;
            let Some(c) = out.iter_mut().find(|c| c.cgroup_id == key.cgroup_id) else {
                continue;
            };
            done_depths.push(key);
            if path.counted == 0 || path.counted_stack_id < 0 {
                continue;
            }
            let frames = frames_of(path.counted_stack_id);
            if frames.is_empty() {
                // Without its stack a check would count as audited "to be safe", and these
                // are unaudited by construction: left out rather than granted.
                continue;
            }
            let check = CapKey {
                cgroup_id: key.cgroup_id,
                cap: key.cap,
                flags: key.flags,
                syscall_nr: key.syscall_nr,
                arch: key.arch,
                stack_id: path.counted_stack_id,
                top_frames: [0; CAP_TOP_FRAMES],
            };
            c.cap_checks
                .push((check, path.counted, frames, path.counted));
        }
        // Forget what was collected: a long-running `profiler serve` must not fill the maps
        // with finished containers' checks.
        let ids: Vec<u64> = out.iter().map(|c| c.cgroup_id).collect();
        let mut ops: HashMap<&mut MapData, u64, u64> = HashMap::try_from(
            self.ebpf
                .map_mut("IO_URING_OPS")
                .context("map IO_URING_OPS missing")?,
        )?;
        for c in &mut out {
            if let Ok(bits) = ops.get(&c.cgroup_id, 0) {
                c.io_uring_ops = bits;
                if forget {
                    let _ = ops.remove(&c.cgroup_id);
                }
            }
        }
        if forget {
            self.remove_keys::<CapKey, u64>("CAP_CHECKS", &done_checks)?;
            self.remove_keys::<CapDepthKey, CapDepthPath>("CAP_DEPTHS", &done_depths)?;
            let mut paths: HashMap<&mut MapData, CapKey, [u32; 2]> = HashMap::try_from(
                self.ebpf
                    .map_mut("CAP_PATHS")
                    .context("map CAP_PATHS missing")?,
            )?;
            let stale: Vec<CapKey> = paths
                .keys()
                .filter_map(Result::ok)
                .filter(|k| ids.contains(&k.cgroup_id))
                .collect();
            for key in &stale {
                let _ = paths.remove(key);
            }
        }

        // The counters are per loaded object: what they grew by while this recording ran is
        // charged to every cgroup of it (which cgroup lost is not known).
        let now = self.loss_counters();
        let before = if forget {
            self.loss_baseline.remove(&recording_id)
        } else {
            self.loss_baseline.get(&recording_id).copied()
        }
        .unwrap_or_default();
        let [cap_full, cap_stack, cgroups_full] =
            [0, 1, 2].map(|i| now[i].saturating_sub(before[i]));
        for c in &mut out {
            c.cap_map_full = cap_full;
            c.cap_stack_missing = cap_stack;
            c.cgroup_map_full = cgroups_full;
        }
        Ok(out)
    }
}

/// The do-nothing `sys_enter_floor` program (benchmarks' baseline), attached while this
/// lives. Under `PROFILER_TIMINGS` the kernel counts its runs, printed at the end as the
/// recording's programs' are: the bench compares the two bodies' run time.
pub struct Floor {
    ebpf: Ebpf,
    run_stats: Option<std::os::fd::OwnedFd>,
}

impl Drop for Floor {
    fn drop(&mut self) {
        if self.run_stats.take().is_some() {
            mark_run_stats(&self.ebpf);
        }
    }
}

/// Attaches only the do-nothing `sys_enter_floor` program.
///
/// The floor stands for what any recorder on `sys_enter` must cost, its start-up included
/// (the build benchmark counts it): so it starts the way a lean one would, not with aya's
/// full parse of the kernel's BTF (about a percent of a 201-file build's CPU, BENCHMARKS.md
/// M28) and every map of the object at full size. Only the program's
/// attach id is looked up (from the per-boot offsets cache), and each map that takes a
/// size is made as small as the kernel allows (the do-nothing program uses none; the rest
/// are a page or less).
pub fn attach_floor() -> anyhow::Result<Floor> {
    // On a thread of its own: hiding the kernel's BTF unshares that thread's mount
    // namespace, which the command started below must not inherit. Over a channel, as
    // `Probes::load` does (M23).
    let (loader_sender, loader) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = loader_sender.send(loader_without_kernel_btf());
    });
    let mut loader = loader
        .recv()
        .map_err(|_| anyhow::anyhow!("making aya's loader failed (thread panicked)"))?;
    let btf = AttachBtf::new(KernelOffsets::read().attach_targets);
    let btf = btf
        .tracepoints()
        .context("the floor program needs the kernel's BTF id of its tracepoint")?;
    for (map, smallest) in [
        ("AYA_LOGS", 4096),
        ("EVENTS", 4096),
        ("RECORDS", 1),
        ("IO_URING_OPS", 1),
        ("CAP_CHECKS", 1),
        ("CAP_STACKS", 1),
        ("CAP_PATHS", 1),
        ("CAP_DEPTHS", 1),
        ("DIRECT_NOAUDIT", 1),
        ("LOSSES", 1),
        ("ALLOWED_EXECS", 1),
        ("ALLOWED_INODES", 1),
        ("EXEC_VERDICT", 1),
    ] {
        loader.map_max_entries(map, smallest);
    }
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    let run_stats = crate::timings::enabled()
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).ok())
        .flatten();
    hooks::attach(&mut ebpf, Some(btf), hooks::FLOOR)?;
    Ok(Floor { ebpf, run_stats })
}

#[cfg(test)]
mod device_number_tests {
    #[test]
    fn stat_device_numbers_become_the_kernels_encoding() {
        // 8:1 (sda1) and 259:65536 (an nvme partition with a large minor).
        assert_eq!(super::kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(
            super::kernel_dev(libc::makedev(259, 65536)),
            (259 << 20) | 65536
        );
        // The kernel's device of the root file system, as stat gives it, round-trips.
        use std::os::unix::fs::MetadataExt as _;
        let dev = std::fs::metadata("/").unwrap().dev();
        let k = super::kernel_dev(dev);
        assert_eq!(libc::makedev((k >> 20) as u32, (k & 0xfffff) as u32), dev);
    }
}
