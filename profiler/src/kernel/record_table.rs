//! Userspace half of the kernel's record table (`RECORDS`, see `profiler_common::RECORD_SLOTS`).
//!
//! The table is an array map created with `BPF_F_MMAPABLE` and mapped here, so userspace
//! claims and releases slots with the same compare-and-swap on `cgroup_id` that the programs
//! use when they discover a container's cgroup (kernel/bpf/arraymap.c, `array_map_mmap`: the
//! mapping is the values themselves, `elem_size` apart). A syscall-based map update could
//! not be atomic with the kernel's claims.
//!
//! The table's epoch (`profiler_common::EPOCH_STEP`) is a global of the programs' `.bss`,
//! which aya does not create mappable; userspace changes it by running the
//! `profiler_epoch` program (`BPF_PROG_TEST_RUN`), atomically with the kernel's own bumps.
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd as _, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use profiler_common::{
    CgroupRecord, EPOCH_CACHE_ON, EPOCH_DEPTHS_ON, EPOCH_OP_ADD, EPOCH_OP_AND, EPOCH_OP_OR,
    EPOCH_OP_READ, EPOCH_STEP, PHASE_SETUP, RECORD_PROBES, RECORD_SLOTS, SLOT_DELETED, SLOT_FREE,
    record_slot,
};

pub struct RecordTable {
    base: NonNull<CgroupRecord>,
    len: usize,
    /// Records in the table: the `RECORDS` map's `max_entries`.
    slots: u32,
    /// Bumps the epoch after every claim and release, so no CPU's syscall cache keeps a
    /// slot's old owner. None: no cache (it is never enabled).
    epoch: Option<EpochProgram>,
    /// The cache may hold entries: set before it is switched on, cleared only once it was
    /// switched off. While clear a bump that fails does no harm (there are no entries);
    /// while set it fails the claim or release it belongs to.
    cache_may_be_on: AtomicBool,
    /// A slot was released since running programs were last waited out: before it is taken
    /// again they must be (see [`RecordTable::reuse`]).
    released_since_wait: AtomicBool,
    /// Waits until every BPF program run that began before the call has ended
    /// ([`ProgramRunWaiter`]; replaced in tests).
    wait_for_runs: Box<dyn Fn() -> anyhow::Result<()> + Send>,
    /// The recordings inserted and not yet taken, to release what the kernel claimed for
    /// one of them after it was taken ([`RecordTable::release_orphans`]).
    live: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// The recordings taken since the last wait: only their slots can be orphans.
    taken_since_wait: std::sync::Mutex<std::collections::HashSet<u64>>,
}

/// Waits out running BPF programs: an update of a map-in-map makes the kernel call
/// `synchronize_rcu()` before it returns (kernel/bpf/syscall.c `maybe_wait_bpf_programs()`:
/// "Wait for any running non-sleepable BPF programs to complete"), unconditionally, unlike
/// `membarrier(MEMBARRIER_CMD_GLOBAL)`, which skips it with one CPU online and is refused
/// with nohz_full CPUs. Every program that stores into the record table is a non-sleepable
/// tracing program (tp_btf and raw_tp run under `rcu_read_lock()`, kernel/trace/bpf_trace.c
/// `__bpf_trace_run()`): none may ever be sleepable, whose runs this does not wait for.
///
/// Why it is needed: a run that found a released slot before the epoch was bumped (or, with
/// the cache off, before the slot's id changed) may store into it for as long as it runs,
/// and on a virtual machine a vCPU can be stalled for milliseconds between a run's load of
/// the slot and its store. 8-24 ms on the 2-CPU test host (AMD EPYC), paid only when a slot
/// released since the last wait is taken again (`profiler serve`, `watch`), never by a
/// one-shot `record`, whose table is new.
struct ProgramRunWaiter {
    /// A one-entry `BPF_MAP_TYPE_ARRAY_OF_MAPS`, and the map stored in it.
    outer: OwnedFd,
    inner: OwnedFd,
}

/// `union bpf_attr` for BPF_MAP_CREATE (include/uapi/linux/bpf.h), up to inner_map_fd; the
/// kernel takes a shorter attr when the rest would be zero.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// A map made by bpf(2) directly (`BPF_MAP_CREATE`).
fn create_map(attr: MapCreate) -> std::io::Result<OwnedFd> {
    // SAFETY: a valid attr of its size; a descriptor returned is ours.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, &raw const attr, size_of::<MapCreate>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl ProgramRunWaiter {
    fn new() -> anyhow::Result<ProgramRunWaiter> {
        let create = |attr| create_map(attr).context("BPF_MAP_CREATE");
        let one = |map_type, inner_map_fd| MapCreate {
            map_type,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
            inner_map_fd,
        };
        let inner = create(one(BPF_MAP_TYPE_ARRAY, 0))?;
        let outer = create(one(BPF_MAP_TYPE_ARRAY_OF_MAPS, inner.as_raw_fd() as u32))?;
        Ok(ProgramRunWaiter { outer, inner })
    }

    fn wait(&self) -> anyhow::Result<()> {
        // `union bpf_attr` for BPF_MAP_UPDATE_ELEM: map_fd, key, value (the inner map's
        // descriptor), flags (BPF_ANY).
        #[repr(C)]
        struct MapUpdate {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        let attr = MapUpdate {
            map_fd: self.outer.as_raw_fd() as u32,
            _pad: 0,
            key: &raw const key as u64,
            value: &raw const value as u64,
            flags: 0,
        };
        // SAFETY: a valid attr whose pointers outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                2, /* BPF_MAP_UPDATE_ELEM */
                &raw const attr,
                size_of::<MapUpdate>(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .context("BPF_MAP_UPDATE_ELEM of a map-in-map");
        }
        Ok(())
    }
}

/// The waiter a table uses: its maps made at its first wait (a one-shot `record` never
/// waits, and start-up does not pay for them).
fn program_run_waiter() -> Box<dyn Fn() -> anyhow::Result<()> + Send> {
    // Only a made waiter is kept: a failure to make one (memory, a limit) is tried again at
    // the next wait instead of failing every later one.
    let waiter = std::sync::OnceLock::<ProgramRunWaiter>::new();
    Box::new(move || {
        let made = match waiter.get() {
            Some(w) => w,
            None => {
                let w = ProgramRunWaiter::new().context("waiting out running BPF programs")?;
                waiter.get_or_init(|| w)
            }
        };
        made.wait().context("waiting out running BPF programs")
    })
}

/// The loaded `profiler_epoch` program (a copy of its descriptor), run with
/// `BPF_PROG_TEST_RUN` (net/bpf/test_run.c, `bpf_prog_test_run_raw_tp`: the arguments are
/// the program's context). Run by descriptor, not through aya's `TestRun`: that wants the
/// program object, which stays in the `Ebpf`, and making a second one from the program's id
/// (`RawTracePoint::from_program_info`) takes `BPF_PROG_GET_FD_BY_ID`, which needs
/// CAP_SYS_ADMIN where CAP_BPF and CAP_PERFMON are otherwise enough.
pub struct EpochProgram(OwnedFd);

impl EpochProgram {
    /// Takes `fd` and runs the program once: a kernel without test runs of raw_tp programs
    /// (before 5.10, or without CONFIG_NET) or a policy that refuses them is found here,
    /// and the cache then stays off.
    pub fn new(fd: OwnedFd) -> anyhow::Result<EpochProgram> {
        let program = EpochProgram(fd);
        program.run(EPOCH_OP_READ, 0)?;
        Ok(program)
    }

    /// `EPOCH_OP_*` with `operand`; the epoch's low 32 bits before.
    fn run(&self, op: u64, operand: u64) -> anyhow::Result<u32> {
        // The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h), up to
        // `batch_size`; the kernel takes a shorter attr when the rest would be zero.
        #[repr(C)]
        #[derive(Default)]
        struct TestRunAttr {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            ctx_size_in: u32,
            ctx_size_out: u32,
            ctx_in: u64,
            ctx_out: u64,
            flags: u32,
            cpu: u32,
            batch_size: u32,
            _pad: u32,
        }
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        let args = [op, operand];
        let mut attr = TestRunAttr {
            prog_fd: self.0.as_raw_fd() as u32,
            ctx_size_in: size_of_val(&args) as u32,
            ctx_in: args.as_ptr() as u64,
            ..TestRunAttr::default()
        };
        // SAFETY: a valid attr of the size given; `args` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestRunAttr>(),
            )
        };
        if r < 0 {
            bail!(
                "running profiler_epoch (BPF_PROG_TEST_RUN) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(attr.retval)
    }
}

const PAGE: usize = 4096;

/// A shared read-write mapping of a mappable array map's values.
fn map_values(fd: impl AsFd, bytes: usize, what: &str) -> anyhow::Result<NonNull<u8>> {
    let len = NonZeroUsize::new(bytes.div_ceil(PAGE) * PAGE).context("empty map")?;
    // SAFETY: a fresh shared mapping of the map's pages; nothing else aliases it in this
    // process.
    let base = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )
    }
    .with_context(|| format!("mapping the kernel's {what} failed"))?;
    Ok(base.cast())
}

// The mapping is shared memory the kernel writes concurrently; every access below goes
// through raw pointers (volatile or atomic), never through references held across calls.
unsafe impl Send for RecordTable {}

impl RecordTable {
    /// Maps the table of the loaded map `fd`, which must be the `RECORDS` array.
    /// `slots`: the map's `max_entries` (a power of two, at most [`RECORD_SLOTS`]).
    pub fn map(fd: impl AsFd, slots: u32) -> anyhow::Result<RecordTable> {
        anyhow::ensure!(
            slots.is_power_of_two() && slots <= RECORD_SLOTS,
            "record table of {slots} slots"
        );
        let bytes = (slots as usize * size_of::<CgroupRecord>()).div_ceil(PAGE) * PAGE;
        let base = map_values(fd, bytes, "record table (RECORDS)")?;
        Ok(RecordTable {
            base: base.cast(),
            len: bytes,
            slots,
            epoch: None,
            cache_may_be_on: AtomicBool::new(false),
            // A map made by this process has no released slot; `true` costs at most one
            // wait, and stays right for a map that had some.
            released_since_wait: AtomicBool::new(true),
            wait_for_runs: program_run_waiter(),
            live: Default::default(),
            taken_since_wait: Default::default(),
        })
    }

    /// Gives the table the epoch program, without which the syscall hook's cache stays off.
    pub fn set_epoch_program(&mut self, program: EpochProgram) {
        self.epoch = Some(program);
    }

    /// Out of date: every CPU's cached slots. An error only when the cache may hold entries
    /// (a stale one would file a task's syscalls under a slot's old owner); the cache is then
    /// switched off too, if that still works.
    fn bump_epoch(&self) -> anyhow::Result<()> {
        let Some(epoch) = &self.epoch else {
            return Ok(());
        };
        match epoch.run(EPOCH_OP_ADD, EPOCH_STEP) {
            Ok(_) => Ok(()),
            Err(_) if !self.cache_may_be_on.load(Ordering::SeqCst) => Ok(()),
            Err(e) => {
                self.disable_task_cache();
                Err(e)
            }
        }
    }

    /// Lets the syscall hook cache slots per task. Only once every hook that bumps the epoch
    /// (forks, cgroup moves) is attached: without them a cached slot could outlive its task.
    /// `depths`: the hook that forgets a moved task's stack depth (`sched_migrate_task`) is
    /// attached too, so the capability hook may trust the depths. Without the epoch program,
    /// or when it fails, the cache stays off (said in `PROFILER_TIMINGS`).
    pub fn enable_task_cache(&self, depths: bool) {
        let Some(epoch) = &self.epoch else {
            return;
        };
        let bits = if depths {
            EPOCH_CACHE_ON | EPOCH_DEPTHS_ON
        } else {
            EPOCH_CACHE_ON
        };
        let enabled = epoch.run(EPOCH_OP_ADD, EPOCH_STEP).and_then(|_| {
            self.cache_may_be_on.store(true, Ordering::SeqCst);
            epoch.run(EPOCH_OP_OR, bits)
        });
        if let Err(e) = enabled {
            self.disable_task_cache();
            crate::timings::mark(&format!("syscall cache off: {e:#}"));
        }
    }

    /// Stops the syscall hook's use of its cache (before the hooks that keep it right go).
    /// Returns whether it is off (it never was on, or clearing the bits worked).
    pub fn disable_task_cache(&self) -> bool {
        let Some(epoch) = &self.epoch else {
            return true;
        };
        if !self.cache_may_be_on.load(Ordering::SeqCst) {
            return true;
        }
        let off = epoch
            .run(EPOCH_OP_AND, !(EPOCH_CACHE_ON | EPOCH_DEPTHS_ON))
            .is_ok();
        if off {
            self.cache_may_be_on.store(false, Ordering::SeqCst);
        }
        off
    }

    fn slot(&self, index: u32) -> *mut CgroupRecord {
        assert!(index < self.slots);
        // SAFETY: index is within the mapping (`slots` records fit in `len`).
        unsafe { self.base.as_ptr().add(index as usize) }
    }

    fn id(&self, index: u32) -> &AtomicU64 {
        // SAFETY: `cgroup_id` is the record's first field, 8-byte aligned (the mapping is
        // page-aligned and records are a multiple of 8 bytes long).
        unsafe { AtomicU64::from_ptr(&raw mut (*self.slot(index)).cgroup_id) }
    }

    /// Zeroes everything of a slot's record but its id.
    fn clear(&self, index: u32) {
        let record = self.slot(index);
        let id_len = size_of::<u64>();
        // SAFETY: the bytes after `cgroup_id` up to the record's end, within the mapping.
        unsafe {
            std::ptr::write_bytes(
                (record as *mut u8).add(id_len),
                0,
                size_of::<CgroupRecord>() - id_len,
            )
        };
    }

    /// Starts recording `cgroup_id` as a recording of its own. `awaiting_exec`: profiler
    /// starts the cgroup's first process, and what it does before its first exec is not
    /// recorded.
    pub fn insert(&self, cgroup_id: u64, awaiting_exec: bool) -> anyhow::Result<()> {
        self.insert_in_phase(cgroup_id, awaiting_exec, PHASE_SETUP as u32)
    }

    /// Like [`RecordTable::insert`], starting in `phase`: a cgroup that is already running
    /// its workload (`record --attach`) starts in the workload phase, since no filter load
    /// or exec will mark the start of it.
    pub fn insert_in_phase(
        &self,
        cgroup_id: u64,
        awaiting_exec: bool,
        phase: u32,
    ) -> anyhow::Result<()> {
        if cgroup_id == SLOT_FREE || cgroup_id == SLOT_DELETED {
            bail!("cgroup id {cgroup_id} cannot be recorded");
        }
        // Again if the kernel claims the chosen free slot first (for a container's cgroup).
        for _ in 0..RECORD_PROBES {
            let Some((index, previous)) = self.slot_for(cgroup_id)? else {
                bail!(
                    "cannot record cgroup {cgroup_id}: the kernel's record table has no free \
                     slot among the {RECORD_PROBES} this id may use ({} slots in \
                     all); too many cgroups recorded at once?",
                    self.slots
                );
            };
            let claimed = if previous == SLOT_DELETED {
                self.reuse(index, cgroup_id, awaiting_exec, phase)
                    .with_context(|| format!("cannot record cgroup {cgroup_id}"))?
            } else {
                self.claim_free(index, cgroup_id, awaiting_exec, phase)
            };
            if !claimed {
                continue;
            }
            self.live_recordings().insert(cgroup_id);
            // Tasks already in the cgroup (`--attach`) may be cached as not recorded.
            if let Err(e) = self.bump_epoch() {
                // Also whatever the kernel claimed below it meanwhile.
                self.records_of(cgroup_id, true);
                return Err(e.context(format!("cannot record cgroup {cgroup_id}")));
            }
            return Ok(());
        }
        bail!("cannot record cgroup {cgroup_id}: the kernel kept claiming its free slots")
    }

    /// Where `cgroup_id` goes: the first slot of its probe sequence that is released or free
    /// (its index, and which of the two), once no slot of the sequence holds the id already
    /// (a released slot can sit before the id's live one: taking it would record the id
    /// twice, and lookups would find only the new one). None: no room. A lookup stops at
    /// the first free slot, and slots never become free again, so no id lies beyond one.
    fn slot_for(&self, cgroup_id: u64) -> anyhow::Result<Option<(u32, u64)>> {
        let mut released = None;
        for probe in 0..RECORD_PROBES {
            let index = record_slot(cgroup_id, probe, self.slots);
            match self.id(index).load(Ordering::Acquire) {
                id if id == cgroup_id => bail!("cgroup {cgroup_id} is already being recorded"),
                SLOT_DELETED if released.is_none() => released = Some((index, SLOT_DELETED)),
                SLOT_FREE => return Ok(Some(released.unwrap_or((index, SLOT_FREE)))),
                _ => {}
            }
        }
        Ok(released)
    }

    /// Takes the never-used slot `index` (all zero): by compare-and-swap, since the kernel
    /// claims free slots too. Nothing is cleared: stores for the new id may already be
    /// landing (`--attach`).
    fn claim_free(&self, index: u32, cgroup_id: u64, awaiting_exec: bool, phase: u32) -> bool {
        let id = self.id(index);
        if id
            .compare_exchange(SLOT_FREE, cgroup_id, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.fill(index, cgroup_id, awaiting_exec, phase);
        true
    }

    /// Takes the released slot `index`, once nothing can still store into it: the old
    /// owner's cached entries are made out of date (a bump) and every program run that
    /// found the slot before is waited out, if a slot was released since the last wait.
    /// Only this process takes released slots (the kernel claims free ones alone), so the
    /// record is cleared and filled before the new id publishes it. Nothing is claimed when
    /// the bump or the wait fails.
    fn reuse(
        &self,
        index: u32,
        cgroup_id: u64,
        awaiting_exec: bool,
        phase: u32,
    ) -> anyhow::Result<bool> {
        // Cleared before the bump and the wait: a release meanwhile sets it again.
        if self.released_since_wait.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.bump_epoch().and_then(|()| (self.wait_for_runs)()) {
                self.released_since_wait.store(true, Ordering::SeqCst);
                return Err(e);
            }
            // Every claim that was under way when a recording was taken has ended too.
            self.release_orphans();
        }
        self.clear(index);
        self.fill(index, cgroup_id, awaiting_exec, phase);
        // Nobody else takes a released slot (one table per process, used from one thread at
        // a time: `RecordTable` is not `Sync`), so this cannot fail; if it did, the record
        // just overwritten is someone's: stop.
        if self
            .id(index)
            .compare_exchange(SLOT_DELETED, cgroup_id, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            bail!("record slot {index} was taken while it was being made ready");
        }
        Ok(true)
    }

    /// Releases the slots the kernel claimed for a recording already taken: a container's
    /// cgroup met during `take_recording`, behind the scan (the kernel's claim stores the
    /// id first and the recording after it, and may find the recording's own slot just
    /// before it is released). Called once running programs were waited out, so every such
    /// claim has its recording written; a claim under way now (recording 0) is a live
    /// recording's. Without this a long-lived table (`serve`) would keep them for good.
    fn release_orphans(&self) {
        let taken = std::mem::take(
            &mut *self
                .taken_since_wait
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if taken.is_empty() {
            return;
        }
        let live = self.live_recordings().clone();
        for index in 0..self.slots {
            let id = self.id(index).load(Ordering::Acquire);
            if id == SLOT_FREE || id == SLOT_DELETED || live.contains(&id) {
                continue;
            }
            // SAFETY: within the mapping.
            let owner = unsafe { (&raw const (*self.slot(index)).recording_id).read_volatile() };
            // Only a recording taken since the last wait: a record this table did not make,
            // or a claim still under way (owner 0), is never touched.
            if taken.contains(&owner) && !live.contains(&owner) {
                eprintln!(
                    "profiler: warning: cgroup {id} was found below recording {owner} as it was being collected; what it did then is not in that recording"
                );
                self.released_since_wait.store(true, Ordering::SeqCst);
                self.clear(index);
                self.id(index).store(SLOT_DELETED, Ordering::Release);
            }
        }
    }

    fn live_recordings(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A claimed record's own fields.
    fn fill(&self, index: u32, recording_id: u64, awaiting_exec: bool, phase: u32) {
        let record = self.slot(index);
        // SAFETY: fields of a slot this process claims.
        unsafe {
            (&raw mut (*record).recording_id).write_volatile(recording_id);
            (&raw mut (*record).phase).write_volatile(phase);
            (&raw mut (*record).awaiting_exec).write_volatile(awaiting_exec as u32);
        }
        std::sync::atomic::fence(Ordering::Release);
    }

    /// Copies out the records of recording `recording_id` as they are now, and leaves them
    /// recording (`profiler watch`).
    pub fn snapshot_recording(&self, recording_id: u64) -> Vec<CgroupRecord> {
        self.records_of(recording_id, false)
    }

    /// Copies out the records of recording `recording_id` (its own cgroup's and those of the
    /// cgroups discovered below it) and releases their slots.
    pub fn take_recording(&self, recording_id: u64) -> Vec<CgroupRecord> {
        self.records_of(recording_id, true)
    }

    fn records_of(&self, recording_id: u64, release: bool) -> Vec<CgroupRecord> {
        let mut out = Vec::new();
        for index in 0..self.slots {
            let id = self.id(index).load(Ordering::Acquire);
            if id == SLOT_FREE || id == SLOT_DELETED {
                continue;
            }
            let record = self.slot(index);
            // SAFETY: within the mapping; the kernel may still be storing single bytes (a
            // process left behind, or a recording going on), which a volatile copy
            // tolerates (a bit set during the copy is seen by the next one).
            let owner = unsafe { (&raw const (*record).recording_id).read_volatile() };
            if id != recording_id && owner != recording_id {
                continue;
            }
            out.push(unsafe { record.read_volatile() });
            if release {
                self.released_since_wait.store(true, Ordering::SeqCst);
                self.clear(index);
                self.id(index).store(SLOT_DELETED, Ordering::Release);
            }
        }
        if release {
            self.live_recordings().remove(&recording_id);
            self.taken_since_wait
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(recording_id);
        }
        // A bump that fails switches the cache off if it can (`bump_epoch`); the released
        // slots are deleted, not free, so only `insert` reuses them, and it bumps and waits
        // out running programs before it clears one, or takes none.
        if release {
            let _ = self.bump_epoch();
        }
        out
    }
}

impl Drop for RecordTable {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `map`, not used after this.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A real mappable array map shaped like the programs' `RECORDS` (bpf(2) directly: the
    /// table must not need the programs to be tested).
    fn records_map() -> Option<OwnedFd> {
        const BPF_F_MMAPABLE: u32 = 1 << 10;
        match create_map(MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: size_of::<CgroupRecord>() as u32,
            max_entries: RECORD_SLOTS,
            map_flags: BPF_F_MMAPABLE,
            inner_map_fd: 0,
        }) {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!("skipped: cannot create a BPF map here ({e}); needs root");
                None
            }
        }
    }

    /// The table holds RECORD_SLOTS recordings, refuses the next one with an error that says
    /// why, gives each recording back exactly, and reuses released slots; ids that collide
    /// are probed past, up to RECORD_PROBES of them.
    #[test]
    fn fills_refuses_releases_and_probes() {
        let Some(map) = records_map() else { return };
        let table = RecordTable::map(&map, RECORD_SLOTS).unwrap();
        let base = 1_000_000u64;
        for i in 0..RECORD_SLOTS as u64 {
            table.insert(base + i, i % 2 == 0).unwrap();
        }
        let full = table.insert(base + RECORD_SLOTS as u64, false).unwrap_err();
        assert!(format!("{full:#}").contains("no free slot"), "{full:#}");
        assert!(table.insert(base + 3, false).is_err(), "same cgroup twice");

        let taken = table.take_recording(base + 7);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].cgroup_id, base + 7);
        assert_eq!(taken[0].recording_id, base + 7);
        assert_eq!(taken[0].awaiting_exec, 0);
        assert!(table.take_recording(base + 7).is_empty(), "released twice");
        // The freed slot is reused, and it starts empty.
        table.insert(base + 7 + RECORD_SLOTS as u64, true).unwrap();
        let again = table.take_recording(base + 7 + RECORD_SLOTS as u64);
        assert_eq!(again[0].awaiting_exec, 1);
        assert!(
            again[0]
                .syscalls
                .iter()
                .flatten()
                .flatten()
                .all(|b| *b == 0)
        );
        // Everything else is still there, each under its own id.
        for i in [0u64, 1, 6, 8, RECORD_SLOTS as u64 - 1] {
            let r = table.take_recording(base + i);
            assert_eq!(r.len(), 1, "id {}", base + i);
            assert_eq!(r[0].cgroup_id, base + i);
        }
    }

    /// A table whose waits are counted, or fail.
    fn table_with_waits(map: &OwnedFd, fail: bool) -> (RecordTable, Arc<AtomicUsize>) {
        let mut table = RecordTable::map(map, RECORD_SLOTS).unwrap();
        let waits = count_waits(&mut table, fail);
        (table, waits)
    }

    /// Makes `table`'s waits counted (and fail, if `fail`); the count.
    fn count_waits(table: &mut RecordTable, fail: bool) -> Arc<AtomicUsize> {
        let waits = Arc::new(AtomicUsize::new(0));
        let counted = waits.clone();
        table.wait_for_runs = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            if fail {
                anyhow::bail!("no wait here");
            }
            Ok(())
        });
        waits
    }

    #[test]
    fn running_programs_are_waited_out_by_the_kernel() {
        if records_map().is_none() {
            return;
        }
        // The real waiter: the map-in-map update, which returns after synchronize_rcu().
        let waiter = ProgramRunWaiter::new().unwrap();
        // The kernel waits only for updates of a map-in-map (`maybe_wait_bpf_programs`): the
        // outer map's type as the kernel reports it (`struct bpf_map_info.type`).
        let mut info = [0u32; 32];
        #[repr(C)]
        struct InfoByFd {
            bpf_fd: u32,
            info_len: u32,
            info: u64,
        }
        let attr = InfoByFd {
            bpf_fd: waiter.outer.as_raw_fd() as u32,
            info_len: size_of_val(&info) as u32,
            info: info.as_mut_ptr() as u64,
        };
        // SAFETY: BPF_OBJ_GET_INFO_BY_FD (15) writes at most info_len bytes into `info`.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 15, &raw const attr, size_of::<InfoByFd>()) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        assert_eq!(info[0], 12, "BPF_MAP_TYPE_ARRAY_OF_MAPS");
        waiter.wait().unwrap();
        waiter.wait().unwrap();
    }

    #[test]
    fn a_released_slot_stays_released_and_untouched_until_programs_are_waited_out() {
        let Some(map) = records_map() else { return };
        let mut table = RecordTable::map(&map, RECORD_SLOTS).unwrap();
        let base = 5_000_000u64;
        for i in 0..RECORD_SLOTS as u64 {
            table.insert(base + i, false).unwrap();
        }
        assert_eq!(table.take_recording(base + 4).len(), 1);
        let newcomer = base + 4 + RECORD_SLOTS as u64;
        let index = record_slot(newcomer, 0, RECORD_SLOTS);
        assert_eq!(table.id(index).load(Ordering::SeqCst), SLOT_DELETED);
        // A late store of the old owner's, as a stalled program run would make it.
        let record = table.slot(index);
        unsafe { (*record).syscalls[0][0][3] = 1 };
        let at = record as usize;
        table.wait_for_runs = Box::new(move || {
            let record = at as *mut CgroupRecord;
            // SAFETY: the slot's record, within the table's mapping, which outlives the table.
            let (id, late) = unsafe {
                (
                    AtomicU64::from_ptr(&raw mut (*record).cgroup_id).load(Ordering::SeqCst),
                    (*record).syscalls[0][0][3],
                )
            };
            anyhow::ensure!(id == SLOT_DELETED, "published before the wait");
            anyhow::ensure!(late == 1, "cleared before the wait");
            Ok(())
        });
        table.insert(newcomer, false).unwrap();
        let taken = table.take_recording(newcomer);
        assert!(
            taken[0]
                .syscalls
                .iter()
                .flatten()
                .flatten()
                .all(|b| *b == 0),
            "the late store survived"
        );
    }

    #[test]
    fn a_released_slot_is_taken_again_only_once_running_programs_are_waited_out() {
        let Some(map) = records_map() else { return };
        let (table, waits) = table_with_waits(&map, false);
        let base = 3_000_000u64;
        // Free slots: no wait.
        for i in 0..RECORD_SLOTS as u64 {
            table.insert(base + i, false).unwrap();
        }
        assert_eq!(waits.load(Ordering::SeqCst), 0);
        // Two released, then both taken again: one wait covers both releases.
        assert_eq!(table.take_recording(base + 1).len(), 1);
        assert_eq!(table.take_recording(base + 2).len(), 1);
        table.insert(base + 1 + RECORD_SLOTS as u64, true).unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 1);
        table.insert(base + 2 + RECORD_SLOTS as u64, false).unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 1);
        // A release after the wait: waited for again.
        assert_eq!(table.take_recording(base + 3).len(), 1);
        table.insert(base + 3 + RECORD_SLOTS as u64, false).unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 2);
        let again = table.take_recording(base + 1 + RECORD_SLOTS as u64);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].awaiting_exec, 1);
        assert_eq!(again[0].recording_id, base + 1 + RECORD_SLOTS as u64);
    }

    #[test]
    fn a_failed_wait_takes_no_slot() {
        let Some(map) = records_map() else { return };
        let (failing, _) = table_with_waits(&map, true);
        let base = 4_000_000u64;
        for i in 0..RECORD_SLOTS as u64 {
            failing.insert(base + i, false).unwrap();
        }
        assert_eq!(failing.take_recording(base + 9).len(), 1);
        let newcomer = base + 9 + RECORD_SLOTS as u64;
        let e = failing.insert(newcomer, false).unwrap_err();
        assert!(format!("{e:#}").contains("no wait here"), "{e:#}");
        assert!(
            failing.take_recording(newcomer).is_empty(),
            "a slot was claimed"
        );
        // The slot is still the released one, and still to be waited for: the next attempt,
        // with a wait that works, waits and takes it.
        let mut table = failing;
        let waits = count_waits(&mut table, false);
        table.insert(newcomer, false).unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 1);
        assert_eq!(table.take_recording(newcomer).len(), 1);
    }

    #[test]
    fn what_the_kernel_claimed_for_a_taken_recording_is_released_at_the_next_wait() {
        let Some(map) = records_map() else { return };
        let (table, waits) = table_with_waits(&map, false);
        let (gone, kept) = (9_000_001u64, 9_000_002u64);
        table.insert(gone, false).unwrap();
        table.insert(kept, false).unwrap();
        assert_eq!(table.take_recording(gone).len(), 1);
        // Two containers' cgroups as the kernel claims them (id, then recording): one for
        // the recording just taken (a claim that finished behind the scan), one for the
        // recording still going on.
        let claim = |child: u64, owner: u64| {
            let index = record_slot(child, 0, RECORD_SLOTS);
            table
                .id(index)
                .compare_exchange(SLOT_FREE, child, Ordering::AcqRel, Ordering::Acquire)
                .unwrap();
            unsafe { (&raw mut (*table.slot(index)).recording_id).write_volatile(owner) };
            index
        };
        let orphan = claim(9_100_001, gone);
        let child = claim(9_100_002, kept);
        // A claim still under way: the id stored, the recording not yet.
        let under_way = claim(9_100_003, 0);
        // The next reuse of a released slot waits, and then releases the orphan only.
        table.insert(gone + RECORD_SLOTS as u64, false).unwrap();
        assert_eq!(waits.load(Ordering::SeqCst), 1);
        assert_eq!(table.id(orphan).load(Ordering::SeqCst), SLOT_DELETED);
        assert_eq!(table.id(child).load(Ordering::SeqCst), 9_100_002);
        assert_eq!(table.id(under_way).load(Ordering::SeqCst), 9_100_003);
        assert_eq!(
            table.take_recording(kept).len(),
            2,
            "the live recording and its child"
        );
    }

    #[test]
    fn an_id_behind_a_released_slot_is_not_recorded_twice() {
        let Some(map) = records_map() else { return };
        let (table, _) = table_with_waits(&map, false);
        // Same probe sequence for every id: multiples of RECORD_SLOTS apart.
        let id = |k: u64| 7 + k * RECORD_SLOTS as u64;
        table.insert(id(0), false).unwrap();
        table.insert(id(1), false).unwrap();
        // id(0)'s slot, first in the sequence, released; id(1) lives in the second.
        assert_eq!(table.take_recording(id(0)).len(), 1);
        let twice = table.insert(id(1), false).unwrap_err();
        assert!(
            format!("{twice:#}").contains("already being recorded"),
            "{twice:#}"
        );
        assert_eq!(table.take_recording(id(1)).len(), 1, "one slot for id(1)");
    }

    #[test]
    fn colliding_ids_are_probed_past_up_to_the_limit() {
        let Some(map) = records_map() else { return };
        let table = RecordTable::map(&map, RECORD_SLOTS).unwrap();
        // Same slot for every id: multiples of RECORD_SLOTS apart.
        let id = |k: u64| 5 + k * RECORD_SLOTS as u64;
        for k in 0..RECORD_PROBES as u64 {
            table.insert(id(k), false).unwrap();
        }
        assert!(table.insert(id(RECORD_PROBES as u64), false).is_err());
        // Releasing one frees its slot for the next colliding id; the others stay.
        assert_eq!(table.take_recording(id(0)).len(), 1);
        let last = id(RECORD_PROBES as u64 - 1);
        assert_eq!(table.take_recording(last)[0].cgroup_id, last);
        table.insert(id(RECORD_PROBES as u64), false).unwrap();
    }

    /// An epoch program the kernel will not run (here a map's descriptor, which
    /// BPF_PROG_TEST_RUN refuses): refused when it is made; and, had it been taken, a bump
    /// that fails is harmless while the cache was never on, but once the cache may hold
    /// entries it fails the claim, which then leaves no slot behind.
    #[test]
    fn a_failing_epoch_program_fails_claims_only_while_the_cache_may_be_on() {
        let Some(map) = records_map() else { return };
        let not_a_program = || map.try_clone().unwrap();
        assert!(EpochProgram::new(not_a_program()).is_err());
        let mut table = RecordTable::map(&map, RECORD_SLOTS).unwrap();
        table.set_epoch_program(EpochProgram(not_a_program()));
        table.insert(1, false).unwrap();
        // Switching the cache on fails, and leaves it off: claims still work.
        table.enable_task_cache(true);
        table.insert(2, false).unwrap();
        assert_eq!(table.take_recording(1).len(), 1);
        // Cache possibly on (its bits could not be cleared): a claim must fail, whole, and
        // take with it what the kernel claimed below it meanwhile (here planted by hand).
        table.cache_may_be_on.store(true, Ordering::SeqCst);
        let child = 3 + 5 * RECORD_SLOTS as u64 + 1;
        let child_slot = record_slot(child, 0, RECORD_SLOTS);
        table.id(child_slot).store(child, Ordering::SeqCst);
        unsafe { (&raw mut (*table.slot(child_slot)).recording_id).write_volatile(3) };
        let refused = table.insert(3, false).unwrap_err();
        assert!(
            format!("{refused:#}").contains("cannot record cgroup 3"),
            "{refused:#}"
        );
        assert!(
            table.take_recording(3).is_empty(),
            "the refused claim left its slot"
        );
        assert_eq!(
            table.id(child_slot).load(Ordering::SeqCst),
            SLOT_DELETED,
            "the kernel-claimed child was left behind"
        );
        // A deleted slot taken again (1's, released above) fails the same way, and stays
        // deleted.
        let reuse = 1 + RECORD_SLOTS as u64;
        assert!(table.insert(reuse, false).is_err());
        assert_eq!(
            table
                .id(record_slot(reuse, 0, RECORD_SLOTS))
                .load(Ordering::SeqCst),
            SLOT_DELETED
        );
        // The failed bumps could not switch the cache off either: still refused.
        assert!(table.insert(4, false).is_err());
        assert_eq!(table.take_recording(2).len(), 1);
    }
}
