//! The eBPF programs' own diagnostics (aya-log, see profiler-ebpf/src/diagnostics.rs), shown
//! on stderr when `PROFILER_EBPF_LOG` asks for them: `error`, `warn`, `info`, `debug` or
//! `trace`. Unset, empty, `0` or `off` turns them off, and the programs are loaded with the
//! log level 0, so the verifier drops the log calls and the syscall path costs the same.
use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aya::Ebpf;
use aya_log::EbpfLogger;

/// The variable that turns the programs' log on.
pub const ENV: &str = "PROFILER_EBPF_LOG";

/// The `AYA_LOG_LEVEL` to load the programs with: aya-log's level numbers (error 1 ... trace 5).
/// An unknown value is an error, not silently "off": someone asked for diagnostics.
pub fn level() -> anyhow::Result<u8> {
    let value = std::env::var(ENV).unwrap_or_default();
    Ok(match value.to_ascii_lowercase().as_str() {
        "" | "0" | "off" => 0,
        "error" => 1,
        "warn" | "1" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        other => {
            return Err(crate::exit::exit_error(
                2,
                format!("{ENV}={other:?}: expected off, error, warn, info, debug or trace"),
            ));
        }
    })
}

/// Writes each record as one `profiler: ebpf: LEVEL: message` line.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        // The text is the programs' own format string with numbers: no workload bytes.
        eprintln!(
            "profiler: ebpf: {}: {}",
            record.level().as_str().to_ascii_lowercase(),
            record.args()
        );
    }
    fn flush(&self) {}
}

/// Reads the programs' log ring buffer on its own thread until dropped (then once more, so
/// what the last moments logged is shown).
pub struct KernelLog {
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl KernelLog {
    /// Starts reading when `level` is not 0.
    pub fn start(ebpf: &mut Ebpf, level: u8) -> anyhow::Result<Option<KernelLog>> {
        if level == 0 {
            return Ok(None);
        }
        let mut logger = EbpfLogger::init_with_logger(ebpf, Stderr)
            .map_err(|e| anyhow::anyhow!("opening the eBPF log ({ENV}): {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut fds = [nix::poll::PollFd::new(
                        logger.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8));
                    logger.flush();
                }
                logger.flush();
            })
        };
        Ok(Some(KernelLog {
            stop,
            reader: Some(reader),
        }))
    }
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
