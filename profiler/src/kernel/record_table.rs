//! Userspace half of the kernel's record table (`RECORDS`, see `profiler_common::RECORD_SLOTS`).
//!
//! The table is an array map created with `BPF_F_MMAPABLE` and mapped here, so userspace
//! claims and releases slots with the same compare-and-swap on `cgroup_id` that the programs
//! use when they discover a container's cgroup (kernel/bpf/arraymap.c, `array_map_mmap`: the
//! mapping is the values themselves, `elem_size` apart). A syscall-based map update could
//! not be atomic with the kernel's claims.
//!
//! The table's epoch (`profiler_common::EPOCH_STEP`) is a global of the programs' `.bss`,
//! which aya does not create mappable; userspace changes it by running the `epoch_update`
//! program (`BPF_PROG_TEST_RUN`), atomically with the kernel's own bumps.
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use aya::programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use profiler_common::{
    CgroupRecord, EPOCH_CACHE_ON, EPOCH_DEPTHS_ON, EPOCH_OP_ADD, EPOCH_OP_AND, EPOCH_OP_OR,
    EPOCH_STEP, PHASE_SETUP, RECORD_PROBES, RECORD_SLOTS, SLOT_DELETED, SLOT_FREE, record_slot,
};

pub struct RecordTable {
    base: NonNull<CgroupRecord>,
    len: usize,
    /// The loaded `epoch_update` program: bumps the epoch after every claim and release, so
    /// no CPU's syscall cache keeps a slot's old owner. None: no cache (it is never enabled).
    epoch: Option<RawTracePoint>,
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
    pub fn map(fd: impl AsFd) -> anyhow::Result<RecordTable> {
        let bytes = (RECORD_SLOTS as usize * size_of::<CgroupRecord>()).div_ceil(PAGE) * PAGE;
        let base = map_values(fd, bytes, "record table (RECORDS)")?;
        Ok(RecordTable {
            base: base.cast(),
            len: bytes,
            epoch: None,
        })
    }

    /// Gives the table the loaded `epoch_update` program, without which the syscall hook's
    /// cache stays off.
    pub fn set_epoch_program(&mut self, program: RawTracePoint) {
        self.epoch = Some(program);
    }

    /// Runs `epoch_update` (`EPOCH_OP_*`, `operand`); the epoch's low 32 bits before.
    fn update_epoch(&self, op: u64, operand: u64) -> anyhow::Result<u32> {
        let program = self.epoch.as_ref().context("no epoch_update program")?;
        let mut args = [0u64; 12];
        args[0] = op;
        args[1] = operand;
        let run = program
            .test_run(RawTracePointRunOptions { args, cpu: None })
            .context("running epoch_update (BPF_PROG_TEST_RUN) failed")?;
        Ok(run.return_value)
    }

    /// Out of date: every CPU's cached slots. When even that fails the cache is switched
    /// off (if it can be) and the error returned: a stale entry would file a task's
    /// syscalls under a slot's old owner.
    fn bump_epoch(&self) -> anyhow::Result<()> {
        if self.epoch.is_none() {
            return Ok(());
        }
        if let Err(e) = self.update_epoch(EPOCH_OP_ADD, EPOCH_STEP) {
            self.disable_task_cache();
            return Err(e);
        }
        Ok(())
    }

    /// Lets the syscall hook cache slots per task. Only once every hook that bumps the epoch
    /// (forks, cgroup moves) is attached: without them a cached slot could outlive its task.
    /// `depths`: the hook that forgets a moved task's stack depth (`sched_migrate_task`) is
    /// attached too, so the capability hook may trust the depths. Without the epoch program,
    /// or when it fails, the cache stays off (said in `PROFILER_TIMINGS`).
    pub fn enable_task_cache(&self, depths: bool) {
        if self.epoch.is_none() {
            return;
        }
        let bits = if depths {
            EPOCH_CACHE_ON | EPOCH_DEPTHS_ON
        } else {
            EPOCH_CACHE_ON
        };
        let enabled = self
            .update_epoch(EPOCH_OP_ADD, EPOCH_STEP)
            .and_then(|_| self.update_epoch(EPOCH_OP_OR, bits));
        if let Err(e) = enabled {
            self.disable_task_cache();
            crate::timings::mark(&format!("syscall cache off: {e:#}"));
        }
    }

    /// Stops the syscall hook's use of its cache (before the hooks that keep it right go).
    pub fn disable_task_cache(&self) {
        if self.epoch.is_some() {
            let _ = self.update_epoch(EPOCH_OP_AND, !(EPOCH_CACHE_ON | EPOCH_DEPTHS_ON));
        }
    }

    /// Whether the syscall hook caches slots per task.
    pub fn task_cache_enabled(&self) -> bool {
        self.epoch.is_some()
            && self
                .update_epoch(EPOCH_OP_ADD, 0)
                .is_ok_and(|e| e as u64 & EPOCH_CACHE_ON != 0)
    }

    fn slot(&self, index: u32) -> *mut CgroupRecord {
        assert!(index < RECORD_SLOTS);
        // SAFETY: index is within the mapping (RECORD_SLOTS records fit in `len`).
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
        for probe in 0..RECORD_PROBES {
            let index = record_slot(cgroup_id, probe);
            let id = self.id(index);
            let claimed = id
                .compare_exchange(SLOT_FREE, cgroup_id, Ordering::AcqRel, Ordering::Acquire)
                .or_else(|_| {
                    id.compare_exchange(
                        SLOT_DELETED,
                        cgroup_id,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                });
            match claimed {
                Ok(_) => {
                    // A released slot may have taken a late store from a process that was
                    // still running in its old cgroup: start from zero again.
                    self.clear(index);
                    let record = self.slot(index);
                    // SAFETY: fields of a slot this process just claimed.
                    unsafe {
                        (&raw mut (*record).recording_id).write_volatile(cgroup_id);
                        (&raw mut (*record).phase).write_volatile(phase);
                        (&raw mut (*record).awaiting_exec).write_volatile(awaiting_exec as u32);
                    }
                    std::sync::atomic::fence(Ordering::Release);
                    // Tasks already in the cgroup (`--attach`) may be cached as not recorded.
                    if let Err(e) = self.bump_epoch() {
                        self.clear(index);
                        id.store(SLOT_DELETED, Ordering::Release);
                        return Err(e.context(format!("cannot record cgroup {cgroup_id}")));
                    }
                    return Ok(());
                }
                Err(current) if current == cgroup_id => {
                    bail!("cgroup {cgroup_id} is already being recorded")
                }
                Err(_) => {}
            }
        }
        bail!(
            "cannot record cgroup {cgroup_id}: the kernel's record table has no free slot among \
             the {RECORD_PROBES} this id may use ({RECORD_SLOTS} slots in all); too many \
             cgroups recorded at once?"
        )
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
        for index in 0..RECORD_SLOTS {
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
                self.clear(index);
                self.id(index).store(SLOT_DELETED, Ordering::Release);
            }
        }
        // A failed bump leaves the cache off (`bump_epoch`); the released slots are
        // deleted, not free, so only `insert` reuses them, and it bumps again or fails.
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
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::*;

    /// A real mappable array map shaped like the programs' `RECORDS` (bpf(2) directly: the
    /// table must not need the programs to be tested).
    fn records_map() -> Option<OwnedFd> {
        #[repr(C)]
        #[derive(Default)]
        struct MapCreate {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_TYPE_ARRAY: u32 = 2;
        const BPF_F_MMAPABLE: u32 = 1 << 10;
        let mut attr = [0u8; 128];
        let create = MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: size_of::<CgroupRecord>() as u32,
            max_entries: RECORD_SLOTS,
            map_flags: BPF_F_MMAPABLE,
        };
        // SAFETY: MapCreate is plain data at the start of a zeroed bpf_attr.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const create).cast::<u8>(),
                attr.as_mut_ptr(),
                size_of::<MapCreate>(),
            )
        };
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), 128) };
        if fd < 0 {
            eprintln!(
                "skipped: cannot create a BPF map here ({}); needs root",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The table holds RECORD_SLOTS recordings, refuses the next one with an error that says
    /// why, gives each recording back exactly, and reuses released slots; ids that collide
    /// are probed past, up to RECORD_PROBES of them.
    #[test]
    fn fills_refuses_releases_and_probes() {
        let Some(map) = records_map() else { return };
        let table = RecordTable::map(&map).unwrap();
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

    #[test]
    fn colliding_ids_are_probed_past_up_to_the_limit() {
        let Some(map) = records_map() else { return };
        let table = RecordTable::map(&map).unwrap();
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
}
