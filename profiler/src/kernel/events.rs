//! The ring buffer of rare events (execs, writes, binds...) the programs stream.
use profiler_common::Event;

/// The event ring buffer as something tokio can wait on.
pub type EventRing = tokio::io::unix::AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>;

/// Registers the ring buffer with tokio (call inside the runtime).
pub fn watch_events(ring: aya::maps::RingBuf<aya::maps::MapData>) -> anyhow::Result<EventRing> {
    // SAFETY: the ring buffer owns its map fd and keeps it open as long as the AsyncFd, which
    // owns the ring buffer, lives.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {e}"))
}

/// Decodes one ring-buffer record.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    (bytes.len() >= std::mem::size_of::<Event>())
        // SAFETY: Event is plain old data and the length was checked.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}

/// Takes every event the ring buffer holds now.
pub fn drain_events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, out: &mut Vec<Event>) {
    while let Some(item) = ring.next() {
        if let Some(e) = decode_event(&item) {
            out.push(e);
        }
    }
}

/// The events kept for building traces. An event whose meaning does not depend on the state
/// of the process that sent it (a write to an absolute path, a bind, connect, listen, socket
/// or id switch) and that repeats an earlier one in everything but the process and thread id
/// is kept once: a service that rewrites its pid file or reconnects to its database for each
/// request would otherwise grow this by 376 bytes per request for as long as it is recorded.
/// Events tied to process state (forks, chdirs, execs, relative paths) are all kept, in order.
#[derive(Default)]
pub struct EventLog {
    events: Vec<Event>,
    /// Per cgroup, the SHA-256 (first 128 bits) of each kept stateless event with its ids
    /// zeroed: 16 bytes per distinct event instead of a copy, and no collision a workload
    /// could aim for. Dropped with the cgroup's events (`serve` runs for days).
    seen: std::collections::HashMap<u64, std::collections::HashSet<[u8; 16]>>,
    repeats: u64,
}

impl EventLog {
    pub fn push(&mut self, e: Event) {
        if let Some(key) = repeat_key(&e)
            && !self.seen.entry(e.cgroup_id).or_default().insert(key)
        {
            self.repeats += 1;
            return;
        }
        self.events.push(e);
    }

    pub fn extend(&mut self, batch: impl IntoIterator<Item = Event>) {
        for e in batch {
            self.push(e);
        }
    }

    /// Takes every event the ring buffer holds now.
    pub fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while let Some(item) = ring.next() {
            if let Some(e) = decode_event(&item) {
                self.push(e);
            }
        }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Removes and returns the events of one cgroup (its recording ended).
    pub fn take_cgroup(&mut self, cgroup_id: u64) -> Vec<Event> {
        let (mine, rest) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|e| e.cgroup_id == cgroup_id);
        self.events = rest;
        self.seen.remove(&cgroup_id);
        mine
    }

    /// How many repeated events were not kept.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }
}

/// The key under which a stateless event counts as a repeat, or None when the event must be
/// kept whatever came before (its meaning depends on the sender's cwd, fds or exec state).
fn repeat_key(e: &Event) -> Option<[u8; 16]> {
    use profiler_common::{
        EVENT_BIND, EVENT_CONNECT, EVENT_LISTEN, EVENT_SETID, EVENT_SOCKET, EVENT_WRITE,
    };
    use sha2::Digest;
    let stateless = match e.kind {
        EVENT_WRITE => e.data[0] == b'/',
        EVENT_BIND | EVENT_CONNECT | EVENT_LISTEN | EVENT_SOCKET | EVENT_SETID => true,
        _ => false,
    };
    if !stateless {
        return None;
    }
    let mut anonymous = *e;
    anonymous.pid = 0;
    anonymous.tid = 0;
    // SAFETY: Event is plain old data without padding (its size is asserted in
    // profiler-common), so all of its bytes are initialised.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            &anonymous as *const Event as *const u8,
            std::mem::size_of::<Event>(),
        )
    };
    let digest = sha2::Sha256::digest(bytes);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::{EVENT_CHDIR, EVENT_CONNECT, EVENT_WRITE};

    fn event(kind: u32, pid: u32, phase: u32, path: &str) -> Event {
        let mut e = Event {
            cgroup_id: 7,
            kind,
            pid,
            tid: pid,
            phase,
            args: [257, (-100i64) as u64, 0o1101, 0],
            data: [0; profiler_common::EVENT_PATH_LEN],
            aux: [0; profiler_common::EVENT_AUX_LEN],
        };
        e.data[..path.len()].copy_from_slice(path.as_bytes());
        e
    }

    #[test]
    fn repeated_stateless_events_are_kept_once_and_the_rest_in_order() {
        let mut log = EventLog::default();
        for pid in 1..=1000 {
            log.push(event(EVENT_WRITE, pid, 2, "/run/app.pid"));
        }
        // Another phase, another path, another kind: each is new.
        log.push(event(EVENT_WRITE, 1, 1, "/run/app.pid"));
        log.push(event(EVENT_WRITE, 1, 2, "/run/app.pid2"));
        log.push(event(EVENT_CONNECT, 1, 2, "/run/app.pid"));
        // Relative paths and chdirs depend on the sender's cwd: all kept.
        for _ in 0..3 {
            log.push(event(EVENT_CHDIR, 5, 2, "/srv"));
            log.push(event(EVENT_WRITE, 5, 2, "data"));
        }
        let kinds: Vec<(u32, u32)> = log.events().iter().map(|e| (e.kind, e.phase)).collect();
        assert_eq!(log.events().len(), 4 + 6, "{kinds:?}");
        assert_eq!(log.repeats(), 999);
        assert_eq!(
            log.events()[0].pid,
            1,
            "the first of the repeats is the one kept"
        );
        assert_eq!(&log.events()[4].data[..4], b"/srv");
        assert_eq!(&log.events()[5].data[..4], b"data");
        let mine = log.take_cgroup(7);
        assert_eq!(mine.len(), 10);
        assert!(log.events().is_empty());
        assert!(
            log.seen.is_empty(),
            "a finished cgroup's keys are dropped with it"
        );
    }
}
