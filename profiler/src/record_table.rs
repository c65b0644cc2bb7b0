//! Userspace half of the kernel's record table (`RECORDS`, see `profiler_common::RECORD_SLOTS`).
//!
//! The table is an array map created with `BPF_F_MMAPABLE` and mapped here, so userspace
//! claims and releases slots with the same compare-and-swap on `cgroup_id` that the programs
//! use when they discover a container's cgroup (kernel/bpf/arraymap.c, `array_map_mmap`: the
//! mapping is the values themselves, `elem_size` apart). A syscall-based map update could
//! not be atomic with the kernel's claims.
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use profiler_common::{
    CgroupRecord, PHASE_SETUP, RECORD_PROBES, RECORD_SLOTS, SLOT_DELETED, SLOT_FREE, record_slot,
};

pub struct RecordTable {
    base: NonNull<CgroupRecord>,
    len: usize,
}

// The mapping is shared memory the kernel writes concurrently; every access below goes
// through raw pointers (volatile or atomic), never through references held across calls.
unsafe impl Send for RecordTable {}

impl RecordTable {
    /// Maps the table of the loaded map `fd` (which must be the `RECORDS` array).
    pub fn map(fd: impl AsFd) -> anyhow::Result<RecordTable> {
        let page = 4096;
        let bytes = (RECORD_SLOTS as usize * size_of::<CgroupRecord>()).div_ceil(page) * page;
        let len = NonZeroUsize::new(bytes).context("empty record table")?;
        // SAFETY: a fresh shared mapping of the map's pages; nothing else aliases it in
        // this process.
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
        .context("mapping the kernel's record table (RECORDS) failed")?;
        Ok(RecordTable {
            base: base.cast(),
            len: bytes,
        })
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
                        (&raw mut (*record).phase).write_volatile(PHASE_SETUP as u32);
                        (&raw mut (*record).awaiting_exec).write_volatile(awaiting_exec as u32);
                    }
                    std::sync::atomic::fence(Ordering::Release);
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

    /// Copies out the records of recording `recording_id` (its own cgroup's and those of the
    /// cgroups discovered below it) and releases their slots.
    pub fn take_recording(&self, recording_id: u64) -> Vec<CgroupRecord> {
        let mut out = Vec::new();
        for index in 0..RECORD_SLOTS {
            let id = self.id(index).load(Ordering::Acquire);
            if id == SLOT_FREE || id == SLOT_DELETED {
                continue;
            }
            let record = self.slot(index);
            // SAFETY: within the mapping; the kernel may still be storing single bytes (a
            // process left behind), which a volatile copy tolerates.
            let owner = unsafe { (&raw const (*record).recording_id).read_volatile() };
            if id != recording_id && owner != recording_id {
                continue;
            }
            out.push(unsafe { record.read_volatile() });
            self.clear(index);
            self.id(index).store(SLOT_DELETED, Ordering::Release);
        }
        out
    }
}

impl Drop for RecordTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}
