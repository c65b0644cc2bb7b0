//! Executables already identified (SHA-256 and ELF facts, `live_facts::identify`), by the
//! file's whole stamp: this run's, and earlier runs' kept in profiler's runtime folder.
//!
//! Hashing is most of what profiler does while a build runs: cc1 alone is 33 MB, and the
//! SHA-256 of a `make -j2` of 201 files' programs, with the reads, took some 30 ms of
//! profiler's CPU in every recording (perf, AMD EPYC), for files that had not changed since
//! the last one.
//!
//! A stamp is (device, inode, size, mtime, ctime), all to the nanosecond. On a local disk
//! filesystem only the kernel sets ctime, to the current time, on every change of content
//! or metadata, and since Linux 6.13 a change after a `stat` gets a fresh fine-grained
//! timestamp on the filesystems that opt in (multigrain timestamps, FS_MGTIME: ext4, xfs,
//! btrfs, tmpfs; fs/inode.c `inode_set_ctime_current`), so a file rewritten after profiler
//! looked has another stamp. Elsewhere the stamp is not the kernel's word: a FUSE server
//! reports what it likes, a filesystem image a workload mounts brings its own inode numbers
//! and times, and anonymous device numbers (overlayfs, tmpfs, FUSE, network filesystems:
//! major 0) come back for the next mount. So earlier runs' entries are kept and used only
//! for files on a real block device (major neither 0 nor a loop device's); within one run
//! every file is known by its stamp. The cache lives in the root-only runtime folder and is
//! read only as root's own file that nobody else can write ([`crate::private_dir`]).
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;

use crate::trace::image::ExecutableFile;

/// The cache file in the runtime folder.
const CACHE: &str = "executables.json";
/// Entries kept: this run's first, then earlier ones, up to this many (a few hundred bytes
/// each; the file is read once per recording, at its first exec).
const MAX_ENTRIES: usize = 512;

/// Loop devices (Documentation/admin-guide/devices.txt): a filesystem image the workload
/// may have made.
const LOOP_MAJOR: u32 = 7;

/// What names one version of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Whether an earlier run's word on this file can be trusted: a real block device's.
    fn lasting(&self) -> bool {
        let major = nix::sys::stat::major(self.dev) as u32;
        major != 0 && major != LOOP_MAJOR
    }

    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    entries: Vec<(Stamp, ExecutableFile)>,
}

#[derive(Default)]
pub struct Identified {
    /// This run's: a program run a thousand times is hashed once, one rewritten in place
    /// again.
    stamped: HashMap<Stamp, ExecutableFile>,
    /// Earlier runs', read at the first file on a real block device this run did not know
    /// yet.
    earlier: Option<HashMap<Stamp, ExecutableFile>>,
    /// Whether this run identified a file on a real block device that no earlier run had:
    /// else the cache already says all this run could, and is not written again (its
    /// serialisation and rename were ~1 ms of the time after a build's end, strace, AMD
    /// EPYC 2026-12-03).
    learned: bool,
}

impl Identified {
    /// What is known of the file `meta` describes: from this run, else from an earlier one
    /// (for the very same stamp).
    pub fn get(&mut self, meta: &std::fs::Metadata) -> Option<ExecutableFile> {
        let stamp = Stamp::of(meta);
        if let Some(known) = self.stamped.get(&stamp) {
            return Some(known.clone());
        }
        if !stamp.lasting() {
            return None;
        }
        let known = self
            .earlier
            .get_or_insert_with(read_cache)
            .get(&stamp)?
            .clone();
        self.stamped.insert(stamp, known.clone());
        Some(known)
    }

    /// What this run found out about the file `meta` describes.
    pub fn insert(&mut self, meta: &std::fs::Metadata, facts: ExecutableFile) {
        let stamp = Stamp::of(meta);
        self.learned |= stamp.lasting();
        self.stamped.insert(stamp, facts);
    }

    /// Keeps this run's files (and as many earlier ones as fit) for the next runs. Best
    /// effort: without the cache the next run hashes again.
    pub fn save(&mut self) {
        // Entries are only ever added to the file by a run that learned something, and such
        // a run puts all of its own first: skipping the others loses no entry a run used.
        if !self.learned {
            return;
        }
        self.learned = false;
        let Ok(dir) = crate::private_dir::runtime_dir() else {
            return;
        };
        let earlier = self.earlier.take().unwrap_or_else(read_cache);
        let mut entries: Vec<(Stamp, ExecutableFile)> =
            self.stamped.drain().filter(|(s, _)| s.lasting()).collect();
        if entries.is_empty() {
            return;
        }
        let older: Vec<(Stamp, ExecutableFile)> = earlier
            .into_iter()
            .filter(|(s, _)| !entries.iter().any(|(t, _)| t == s))
            .collect();
        entries.extend(older);
        entries.truncate(MAX_ENTRIES);
        if let Ok(bytes) = serde_json::to_vec(&CacheFile { entries }) {
            let _ = crate::private_dir::write_cache_file(&dir, CACHE, &bytes);
        }
    }
}

fn read_cache() -> HashMap<Stamp, ExecutableFile> {
    let Ok(dir) = crate::private_dir::runtime_dir() else {
        return HashMap::new();
    };
    crate::private_dir::open_cache_file(&dir, CACHE)
        .and_then(|f| serde_json::from_reader::<_, CacheFile>(std::io::BufReader::new(f)).ok())
        .map(|c| c.entries.into_iter().filter(|(s, _)| s.lasting()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file rewritten in place with content of the same size, its mtime set back, is not
    /// taken for the version hashed before (its ctime moved); and a file on an anonymous
    /// device is never known from an earlier run's entry.
    #[test]
    fn a_rewritten_file_is_not_taken_for_the_one_hashed_before() {
        if !crate::private_dir::root_or_skip() {
            return;
        }
        let dir = crate::private_dir::PrivateDir::create("identified-test").unwrap();
        let path = dir.write("prog", b"version one").unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let facts = ExecutableFile {
            sha256: "one".into(),
            ..Default::default()
        };
        let mut run = Identified::default();
        run.insert(&before, facts.clone());
        assert_eq!(run.get(&before), Some(facts.clone()));

        std::fs::write(&path, b"version two").unwrap();
        let mtime = std::fs::FileTimes::new().set_modified(before.modified().unwrap());
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(mtime)
            .unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (
                after.dev(),
                after.ino(),
                after.len(),
                after.mtime(),
                after.mtime_nsec()
            ),
            (
                before.dev(),
                before.ino(),
                before.len(),
                before.mtime(),
                before.mtime_nsec()
            )
        );
        assert_eq!(
            run.get(&after),
            None,
            "the old hash was taken for new content"
        );

        // procfs, like tmpfs, overlayfs and FUSE, is on an anonymous device (major 0).
        let anonymous = std::fs::metadata("/proc/self/status").unwrap();
        assert!(
            !Stamp::of(&anonymous).lasting(),
            "an anonymous device taken as lasting"
        );
        let mut next = Identified {
            earlier: Some(HashMap::from([(Stamp::of(&anonymous), facts.clone())])),
            ..Default::default()
        };
        assert_eq!(
            next.get(&anonymous),
            None,
            "an anonymous device's entry used across runs"
        );

        // Only what a run found out itself, on a lasting device, makes the cache be written.
        assert_eq!(run.learned, Stamp::of(&before).lasting());
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        let mut known = Identified {
            earlier: Some(HashMap::from([(Stamp::of(&exe), facts.clone())])),
            ..Default::default()
        };
        if Stamp::of(&exe).lasting() {
            assert_eq!(known.get(&exe), Some(facts.clone()));
            assert!(
                !known.learned,
                "an entry read back from the cache counted as learned"
            );
        }
        known.insert(&exe, facts);
        assert_eq!(known.learned, Stamp::of(&exe).lasting());
    }
}
