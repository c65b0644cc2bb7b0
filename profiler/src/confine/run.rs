//! `profiler run`: execute a command confined by a profile folder, the way a container
//! runtime would: capabilities reduced to the whitelist, no_new_privs, then the seccomp
//! filter compiled by libseccomp from `seccomp.json`, then exec. profiler itself becomes the
//! command (no child), so exit codes and signals are the command's own.
use std::ffi::CString;
use std::path::Path;

use anyhow::Context as _;
use caps::{CapSet, CapsHashSet};

use crate::exit::exit_error;
use crate::profile::{CAPABILITIES_FILE, SECCOMP_FILE, load_capabilities, load_seccomp};
use crate::recording::command::resolve_command;
use crate::trace::capability::parse_capability;

/// How `profiler run` holds the image profile (image-profile.json) in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Landlock {
    /// Apply the Landlock ruleset when the profile folder has an image profile.
    #[default]
    Auto,
    /// seccomp and capabilities only.
    Off,
}

pub fn run(
    profile_dir: &Path,
    command: &[String],
    quiet: bool,
    landlock: Landlock,
) -> anyhow::Result<i32> {
    let seccomp = load_seccomp(profile_dir).map_err(|e| exit_error(2, format!("{e:#}")))?;
    let caps_path = profile_dir.join(CAPABILITIES_FILE);
    let cap_profile =
        load_capabilities(profile_dir).map_err(|e| exit_error(2, format!("{e:#}")))?;
    let mut keep = CapsHashSet::new();
    for name in &cap_profile.add {
        keep.insert(
            parse_capability(name)
                .map_err(|e| exit_error(2, format!("{}: {e}", caps_path.display())))?,
        );
    }

    let program = resolve_command(&command[0])?;
    // Once the filter is loaded, profiler cannot say anything the profile denies (write):
    // a profile that cannot even start the command is reported before.
    if !seccomp.may_allow("execve") {
        return Err(exit_error(
            126,
            format!(
                "{}: the profile does not allow execve, so {} cannot start under it",
                profile_dir.join(SECCOMP_FILE).display(),
                program.display()
            ),
        ));
    }
    let (filter, unknown) = seccomp
        .compile()
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
    if !unknown.is_empty() && !quiet {
        eprintln!(
            "profiler: warning: libseccomp does not know these syscalls, they stay denied: {}",
            unknown.join(", ")
        );
    }
    // Landlock first: it needs no privilege (profiler is still root here, and the ruleset
    // sets no_new_privs itself), and its own syscalls come before the seccomp filter.
    // No image profile (an older folder, a hand-made one): seccomp and capabilities only.
    // One that is there but unreadable or malformed is an error, never a silent step down.
    let image = if landlock == Landlock::Auto
        && profile_dir
            .join(crate::profile::IMAGE_PROFILE_FILE)
            .exists()
    {
        Some(
            crate::profile::load_image_profile(profile_dir)
                .map_err(|e| exit_error(2, format!("{e:#}")))?,
        )
    } else {
        None
    };
    if let Some(image) = &image {
        let plan = crate::confine::landlock::plan(image);
        let outcome =
            crate::confine::landlock::apply(&plan).map_err(|e| exit_error(2, format!("{e:#}")))?;
        if !quiet {
            eprint!("{}", plan.describe(&outcome, "profiler"));
        }
    } else if landlock == Landlock::Auto && !quiet {
        eprintln!(
            "profiler: no image profile in {}: seccomp and capabilities only (no Landlock)",
            profile_dir.display()
        );
    }
    let c_program = CString::new(program.as_os_str().as_encoded_bytes())?;
    let c_args: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("argument contains a NUL byte")?;

    // Bounding set first (dropping needs CAP_SETPCAP, which may itself be dropped next).
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &keep).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("setting permitted capabilities")?;
    caps::set(None, CapSet::Inheritable, &keep).context("setting inheritable capabilities")?;
    // Ambient capabilities survive exec of a non-setuid program by a non-root user.
    caps::clear(None, CapSet::Ambient).ok();
    for cap in &keep {
        caps::raise(None, CapSet::Ambient, *cap).ok();
    }
    // libseccomp sets no_new_privs as part of loading (SCMP_FLTATR_CTL_NNP defaults to on).
    filter.load().context("loading the seccomp filter")?;
    let err = nix::unistd::execv(&c_program, &c_args).unwrap_err();
    let hint = if err == nix::errno::Errno::EPERM {
        " (the profile does not allow execve, or a capability it needs)"
    } else {
        ""
    };
    // From here on profiler itself runs under the profile: it may deny write(2) (Rust's
    // eprintln! then panics) or anything an unwinding exit would make. One raw write, whose
    // failure changes nothing, and _exit (exit_group is always allowed).
    let msg = format!(
        "profiler: cannot execute {}: {err}{hint}\n",
        program.display()
    );
    // SAFETY: a plain write of a valid buffer, then process exit.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(126)
    }
}
