//! `/etc/ld.so.cache` as the dynamic loader reads it: which file each library name
//! (`libc.so.6`) stands for, beyond the `RPATH`/`RUNPATH` of the object that needs it.
//! `ldconfig` writes it from `/etc/ld.so.conf`, so libraries in the folders that file adds
//! (`/usr/local/lib`, a package's private folder) are found only through it.
//!
//! The format is glibc's `cache_file_new` (elf/dl-cache.h): the magic
//! `glibc-ld.so.cache1.1`, the entry count, the string table's length, then 24-byte entries
//! (`flags`, `key`, `value`, `osversion`, `hwcap`), whose `key` (the name) and `value` (the
//! path) are offsets from the header's start. Older caches put the same table after a
//! `ld.so-1.7.0` one; it is found by its magic there too. No crate reads this format; it is a
//! few fixed fields, each bounds-checked here.
use std::collections::HashMap;

const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
/// magic (17) + version (3) + nlibs, len_strings (4 each) + flags, padding (4) +
/// extension_offset (4) + unused (12).
const HEADER: usize = 48;
const ENTRY: usize = 24;
/// A cache larger than this is not one `ldconfig` wrote (Debian's is some 100 KiB).
pub const MAX_CACHE: u64 = 64 * 1024 * 1024;

/// Library name to the paths the cache lists for it, in the cache's order (the loader takes
/// the first one of the right class; the caller checks the class).
#[derive(Debug, Default)]
pub struct LdCache {
    paths: HashMap<String, Vec<String>>,
}

impl LdCache {
    /// Parses a cache; anything that is not one yields an empty cache (the loader ignores an
    /// unreadable cache too, and searches its default folders).
    pub fn parse(data: &[u8]) -> LdCache {
        let mut cache = LdCache::default();
        let Some(base) = data.windows(MAGIC.len()).position(|w| w == MAGIC) else {
            return cache;
        };
        let u32_at = |off: usize| -> Option<u32> {
            data.get(off..off + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
        };
        let string_at = |off: u32| -> Option<String> {
            let start = base.checked_add(off as usize)?;
            let rest = data.get(start..)?;
            let end = rest.iter().position(|b| *b == 0)?;
            std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
        };
        let Some(nlibs) = u32_at(base + 20) else {
            return cache;
        };
        for i in 0..nlibs as usize {
            let entry = base + HEADER + i * ENTRY;
            if entry + ENTRY > data.len() {
                break;
            }
            let (Some(key), Some(value)) = (u32_at(entry + 4), u32_at(entry + 8)) else {
                break;
            };
            if let (Some(name), Some(path)) = (string_at(key), string_at(value))
                && path.starts_with('/')
            {
                cache.paths.entry(name).or_default().push(path);
            }
        }
        cache
    }

    /// The paths the cache lists for `name`.
    pub fn lookup(&self, name: &str) -> &[String] {
        self.paths.get(name).map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own cache (written by its ldconfig) names libc: the parser reads what glibc
    /// writes, not a hand-made sample.
    #[test]
    fn reads_the_hosts_cache() {
        let Ok(data) = std::fs::read("/etc/ld.so.cache") else {
            eprintln!("SKIP: no /etc/ld.so.cache");
            return;
        };
        let cache = LdCache::parse(&data);
        let libc = cache.lookup("libc.so.6");
        assert!(
            libc.iter().any(|p| std::path::Path::new(p).exists()),
            "{libc:?}"
        );
        assert!(cache.lookup("libdoes-not-exist.so.1").is_empty());
    }

    #[test]
    fn a_truncated_cache_is_empty_or_partial_never_a_panic() {
        let data = std::fs::read("/etc/ld.so.cache").unwrap_or_default();
        // Cut before the first entry ends: nothing can be read, and nothing is made up.
        for len in [0, 10, MAGIC.len(), HEADER, HEADER + ENTRY - 1] {
            let cut = &data[..len.min(data.len())];
            assert!(LdCache::parse(cut).paths.is_empty(), "cut at {len}");
        }
        // Cut in the middle: strings past the end are dropped, the rest is read.
        let half = LdCache::parse(&data[..data.len() / 2]);
        assert!(half.paths.values().flatten().all(|p| p.starts_with('/')));
    }
}
