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
