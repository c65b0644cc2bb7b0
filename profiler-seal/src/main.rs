//! `profiler-seal`: a container's entrypoint that holds it to its image profile with
//! Landlock, then runs the container's own entrypoint and command.
//!
//! It reads `landlock.json` from the folder it was started from (mounted read-only with it
//! at `/.profiler-seal`), resolves those rules against the container's root, restricts
//! itself, and executes `entrypoint + (its arguments, or the recorded cmd)`. It fails
//! closed: a missing or malformed rules file, a kernel without Landlock or a ruleset the
//! kernel refuses stops the container (exit 126) rather than running it unsealed.
use std::os::unix::process::CommandExt as _;

use profiler_seal::rules::RULES_FILE;

const WHO: &str = "profiler-seal";

fn fail(msg: &str) -> ! {
    eprintln!("{WHO}: {msg}");
    std::process::exit(126);
}

fn main() {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| fail(&format!("cannot find where it runs from: {e}")));
    let dir = exe
        .parent()
        .unwrap_or_else(|| fail("cannot find where it runs from"));
    let rules_path = dir.join(RULES_FILE);
    let text = std::fs::read_to_string(&rules_path)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", rules_path.display())));
    let rules = profiler_seal::Rules::parse(&text, &rules_path.display().to_string())
        .unwrap_or_else(|e| fail(&e));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = rules.command(&args);
    let Some((program, rest)) = command.split_first() else {
        fail("nothing to run: the rules name no entrypoint or command, and none was given");
    };
    let plan = profiler_seal::resolve(&rules);
    let outcome = profiler_seal::apply(&plan).unwrap_or_else(|e| fail(&e));
    if outcome.status == profiler_seal::apply::Status::NotEnforced {
        fail(
            "this kernel has no Landlock: refusing to start unsealed (the profile's *-unsealed run flags run without it)",
        );
    }
    // What the kernel could not enforce is always said (the image's own environment must
    // not hide it); the full summary unless PROFILER_SEAL_QUIET.
    if std::env::var_os("PROFILER_SEAL_QUIET").is_none()
        || outcome.status != profiler_seal::apply::Status::FullyEnforced
    {
        eprint!("{}", plan.describe(&outcome, WHO));
    }
    // PATH lookup as the container's runtime would do it for an entrypoint.
    let err = std::process::Command::new(program).args(rest).exec();
    eprintln!("{WHO}: {program}: {err}");
    std::process::exit(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    });
}
