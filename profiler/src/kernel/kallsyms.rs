//! /proc/kallsyms, for symbolising the kernel stacks of capability checks, with a per-boot
//! cache in profiler's runtime folder.
use std::path::Path;

use anyhow::Context as _;

use crate::kernel::mapped_file::MappedFile;
use profiler_common::DIRECT_NOAUDIT_FUNCTIONS;

/// A kernel stack frame that could not be symbolised.
pub const UNKNOWN_FRAME: &str = "?";

/// /proc/kallsyms, sorted, for symbolising kernel stack addresses, held in the cache file's
/// own layout (see [`Kallsyms::save_cache`]): read back from the cache it is used where it
/// lies, without a table built per symbol (some 120,000 of them; building one was ~10 ms of
/// CPU taken from the workload at every recording, perf on Intel Xeon 2026-12-03).
pub struct Kallsyms {
    bytes: Table,
    /// How many symbols: entries of 16 bytes from [`SYMBOLS_AT`], sorted by address; the
    /// names follow them.
    count: usize,
}

/// A table's bytes: made from /proc/kallsyms, or the cache file mapped (4.9 MB here: read,
/// its copy and page faults were ~5 ms of CPU at every recording, perf on Intel Xeon).
enum Table {
    Made(Vec<u8>),
    Cached(MappedFile),
}

impl std::ops::Deref for Table {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Table::Made(v) => v,
            Table::Cached(m) => m.bytes(),
        }
    }
}

/// Where the symbol entries start: after the head and the count.
const SYMBOLS_AT: usize = CACHE_HEAD_LEN + 8;

/// Where the text symbols of /proc/kallsyms are kept between runs. The kernel formats
/// /proc/kallsyms a page per read() (BENCHMARKS.md, M10), the largest part of
/// profiler's own CPU use on a short workload, for a table that changes only when a module
/// is loaded or unloaded, or at the next boot (new KASLR offset).
const KALLSYMS_CACHE: &str = "kallsyms.cache";
const KALLSYMS_CACHE_MAGIC: &[u8; 8] = b"PRKSYM02";

/// The text ranges of `profiler_common::DIRECT_NOAUDIT_FUNCTIONS`, `[start, end)`, zero where
/// absent: what the capability hook needs as early as possible, kept at the head of the cache
/// so it is read without the rest.
pub type DirectNoauditRanges = [(u64, u64); DIRECT_NOAUDIT_FUNCTIONS.len()];
/// Magic, key, ranges.
const CACHE_HEAD_LEN: usize = 16 + 16 * DIRECT_NOAUDIT_FUNCTIONS.len();

impl Kallsyms {
    /// The symbol table, from the cache when it belongs to this boot and module set.
    pub fn load() -> anyhow::Result<Kallsyms> {
        let key = kallsyms_cache_key();
        // The runtime folder is checked (root's, 0700) before anything in it is trusted.
        let dir = crate::private_dir::runtime_dir().ok();
        if let (Some(key), Some(dir)) = (key, &dir)
            && let Some(k) = Self::from_cache(dir, key)
        {
            return Ok(k);
        }
        let mut k = Self::from_proc()?;
        if let (Some(key), Some(dir)) = (key, &dir) {
            // Best effort: without a cache the next run reads /proc/kallsyms again.
            let _ = k.save_cache(dir, key);
        }
        Ok(k)
    }

    /// [`DirectNoauditRanges`] from the head of this boot's cache alone, without reading the
    /// table: microseconds where [`Kallsyms::load`] takes milliseconds.
    pub fn cached_direct_noaudit_ranges() -> Option<DirectNoauditRanges> {
        let key = kallsyms_cache_key()?;
        let dir = crate::private_dir::runtime_dir().ok()?;
        let mut head = [0u8; CACHE_HEAD_LEN];
        std::io::Read::read_exact(&mut open_cache(&dir)?, &mut head).ok()?;
        parse_head(&head, key)
    }

    /// This table's [`DirectNoauditRanges`].
    pub fn direct_noaudit_ranges(&self) -> DirectNoauditRanges {
        DIRECT_NOAUDIT_FUNCTIONS.map(|name| self.function_range(name).unwrap_or_default())
    }

    fn from_proc() -> anyhow::Result<Kallsyms> {
        let raw = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        // Only the names are kept (the lines are three times as long).
        let mut text = String::with_capacity(raw.len() / 3);
        let mut symbols = Vec::with_capacity(raw.len() / 40);
        for line in raw.lines() {
            let bytes = line.as_bytes();
            // "ffffffff81000000 T _stext [module]"
            if bytes.len() < 20
                || bytes[16] != b' '
                || !matches!(bytes[17], b't' | b'T' | b'w' | b'W')
            {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(&line[..16], 16) else {
                continue;
            };
            if addr == 0 {
                // kptr_restrict hides addresses: nothing to symbolise with.
                continue;
            }
            let name = &line[19..];
            let name = &name[..name.find(char::is_whitespace).unwrap_or(name.len())];
            symbols.push((addr, text.len() as u32, name.len() as u32));
            text.push_str(name);
        }
        if symbols.is_empty() {
            anyhow::bail!(
                "/proc/kallsyms shows no kernel addresses (kernel.kptr_restrict hides them): kernel stacks \
                 cannot be symbolised"
            );
        }
        Ok(Self::from_table(&text, symbols))
    }

    /// The table of `symbols` (address, name's byte range in `text`), in any order.
    fn from_table(text: &str, mut symbols: Vec<(u64, u32, u32)>) -> Kallsyms {
        symbols.sort_unstable_by_key(|(a, _, _)| *a);
        let mut bytes = Vec::with_capacity(SYMBOLS_AT + symbols.len() * 16 + text.len());
        bytes.extend_from_slice(KALLSYMS_CACHE_MAGIC);
        bytes.resize(CACHE_HEAD_LEN, 0);
        bytes.extend_from_slice(&(symbols.len() as u64).to_ne_bytes());
        for (addr, start, len) in &symbols {
            bytes.extend_from_slice(&addr.to_ne_bytes());
            bytes.extend_from_slice(&start.to_ne_bytes());
            bytes.extend_from_slice(&len.to_ne_bytes());
        }
        bytes.extend_from_slice(text.as_bytes());
        let mut k = Kallsyms {
            bytes: Table::Made(bytes),
            count: symbols.len(),
        };
        k.set_head(0);
        k
    }

    /// Writes the head: `key` and this table's [`DirectNoauditRanges`].
    fn set_head(&mut self, key: u64) {
        let ranges = self.direct_noaudit_ranges();
        let Table::Made(bytes) = &mut self.bytes else {
            return; // a cache has its head
        };
        bytes[8..16].copy_from_slice(&key.to_ne_bytes());
        for (i, (start, end)) in ranges.into_iter().enumerate() {
            bytes[16 + 16 * i..24 + 16 * i].copy_from_slice(&start.to_ne_bytes());
            bytes[24 + 16 * i..32 + 16 * i].copy_from_slice(&end.to_ne_bytes());
        }
    }

    /// Layout: magic, key (u64), [`DirectNoauditRanges`] (u64 pairs), symbol count (u64),
    /// symbols (u64 address, u32 name start, u32 name length), names. Native endianness: the
    /// file never leaves this machine. Into `dir`, a folder only this user can write.
    fn save_cache(&mut self, dir: &Path, key: u64) -> anyhow::Result<()> {
        self.set_head(key);
        // Kernel addresses: readable by root only, like /proc/kallsyms's real addresses.
        crate::private_dir::write_cache_file(dir, KALLSYMS_CACHE, &self.bytes)?;
        Ok(())
    }

    /// Symbol `i`: (address, name start, name length).
    fn symbol(&self, i: usize) -> (u64, u32, u32) {
        let at = SYMBOLS_AT + 16 * i;
        let e = &self.bytes[at..at + 16];
        (
            u64::from_ne_bytes(e[..8].try_into().unwrap()),
            u32::from_ne_bytes(e[8..12].try_into().unwrap()),
            u32::from_ne_bytes(e[12..].try_into().unwrap()),
        )
    }

    /// A symbol's name (checked once, when the table was read: in range, UTF-8).
    fn name(&self, start: u32, len: u32) -> &str {
        let names = SYMBOLS_AT + 16 * self.count;
        let range = names + start as usize..names + (start + len) as usize;
        std::str::from_utf8(&self.bytes[range]).unwrap_or(UNKNOWN_FRAME)
    }

    /// From `dir` (see [`open_cache`]).
    fn from_cache(dir: &Path, key: u64) -> Option<Kallsyms> {
        // Mapped: the cache is root's own file, replaced by a rename, never rewritten in
        // place (`private_dir::write_cache_file`).
        let bytes = MappedFile::new(&open_cache(dir)?)?;
        let bytes = Table::Cached(bytes);
        parse_head(bytes.get(..CACHE_HEAD_LEN)?, key)?;
        let count = u64::from_ne_bytes(bytes.get(CACHE_HEAD_LEN..SYMBOLS_AT)?.try_into().ok()?);
        let count = usize::try_from(count).ok()?;
        let names_at = count.checked_mul(16)?.checked_add(SYMBOLS_AT)?;
        // Every name in range and all of them UTF-8, or the cache is not used (a damaged
        // one is made again from /proc/kallsyms).
        let text = std::str::from_utf8(bytes.get(names_at..)?).ok()?;
        for entry in bytes.get(SYMBOLS_AT..names_at)?.chunks_exact(16) {
            let start = u32::from_ne_bytes(entry[8..12].try_into().ok()?) as usize;
            let end =
                start.checked_add(u32::from_ne_bytes(entry[12..].try_into().ok()?) as usize)?;
            if end > text.len() || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
                return None;
            }
        }
        Some(Kallsyms { bytes, count })
    }

    /// The text range `[start, end)` of the one function called `name`: from its address to
    /// the next symbol's. None when absent or when several symbols have that name.
    pub fn function_range(&self, name: &str) -> Option<(u64, u64)> {
        let mut found = (0..self.count).filter(|i| {
            let (_, start, len) = self.symbol(*i);
            self.name(start, len) == name
        });
        let i = found.next()?;
        if found.next().is_some() {
            return None;
        }
        let start = self.symbol(i).0;
        let end = (i + 1 < self.count).then(|| self.symbol(i + 1).0)?;
        (end > start).then_some((start, end))
    }

    /// `function+0xoffset`, or [`UNKNOWN_FRAME`] for an address below every symbol: a raw
    /// kernel address never goes into a trace (trace.json is readable by others, and the
    /// addresses would give away the kernel's KASLR offset).
    pub fn symbolize(&self, ip: u64) -> String {
        // The first symbol above `ip`, by bisection over the entries.
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.symbol(mid).0 <= ip {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        match lo {
            0 => UNKNOWN_FRAME.to_owned(),
            i => {
                let (base, start, len) = self.symbol(i - 1);
                format!("{}+{:#x}", self.name(start, len), ip - base)
            }
        }
    }
}

/// The cache in `dir` ([`crate::private_dir::open_cache_file`]).
fn open_cache(dir: &Path) -> Option<std::fs::File> {
    crate::private_dir::open_cache_file(dir, KALLSYMS_CACHE)
}

/// The ranges in a cache's head, if it is a cache of this format with this key.
fn parse_head(head: &[u8], key: u64) -> Option<DirectNoauditRanges> {
    let u64_at = |at: usize| Some(u64::from_ne_bytes(head.get(at..at + 8)?.try_into().ok()?));
    if head.get(..8)? != KALLSYMS_CACHE_MAGIC || u64_at(8)? != key {
        return None;
    }
    let mut ranges = DirectNoauditRanges::default();
    for (i, range) in ranges.iter_mut().enumerate() {
        *range = (u64_at(16 + 16 * i)?, u64_at(24 + 16 * i)?);
    }
    Some(ranges)
}

/// What the symbol table depends on: this boot (KASLR offset, built-in symbols) and the
/// loaded modules with their addresses.
fn kallsyms_cache_key() -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // Absent on kernels built without module support (this project's machines).
    let modules = match std::fs::read_to_string("/proc/modules") {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(_) => return None,
    };
    let mut h = std::hash::DefaultHasher::new();
    boot_id.hash(&mut h);
    modules.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::Kallsyms;

    /// A table read back from the cache symbolises exactly as the one it was saved from; a
    /// cache of another boot or module set, or a damaged one, is not used.
    #[test]
    fn cache_round_trip_and_rejection() {
        let symbols = vec![
            (0xffff_ffff_8100_0000, 0, 6),
            (0xffff_ffff_8100_0100, 6, 11),
            (0xffff_ffff_8100_0200, 17, 28),
            (0xffff_ffff_8100_0280, 45, 4),
        ];
        let mut k =
            Kallsyms::from_table("_stextcap_capablesecurity_vm_enough_memory_mmnext", symbols);
        let ranges = k.direct_noaudit_ranges();
        assert_eq!(
            ranges,
            [
                (0xffff_ffff_8100_0100, 0xffff_ffff_8100_0200),
                (0xffff_ffff_8100_0200, 0xffff_ffff_8100_0280),
                (0, 0),
            ]
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/kallsyms-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(super::KALLSYMS_CACHE);
        k.save_cache(&dir, 42).unwrap();
        let back = Kallsyms::from_cache(&dir, 42).expect("cache read back");
        let head = std::fs::read(&path).unwrap();
        assert_eq!(
            super::parse_head(&head[..super::CACHE_HEAD_LEN], 42),
            Some(ranges)
        );
        assert_eq!(super::parse_head(&head[..super::CACHE_HEAD_LEN], 43), None);
        assert_eq!(back.direct_noaudit_ranges(), ranges);
        for ip in [0xffff_ffff_8100_0010, 0xffff_ffff_8100_0183, 0x10] {
            assert_eq!(back.symbolize(ip), k.symbolize(ip));
        }
        assert_eq!(back.symbolize(0xffff_ffff_8100_0183), "cap_capable+0x83");
        assert!(
            Kallsyms::from_cache(&dir, 43).is_none(),
            "other key accepted"
        );
        // The mapping of `back` must be gone before its file is truncated in place.
        drop(back);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(
            Kallsyms::from_cache(&dir, 42).is_none(),
            "truncated cache accepted"
        );
        // A cache others could have written is not trusted.
        k.save_cache(&dir, 42).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            Kallsyms::from_cache(&dir, 42).is_none(),
            "world-writable cache accepted"
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/proc/kallsyms", &path).unwrap();
        assert!(
            Kallsyms::from_cache(&dir, 42).is_none(),
            "a symlink accepted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
