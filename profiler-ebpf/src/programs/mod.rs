//! The programs, one file per kernel hook; entry points only (the work is in the modules of
//! the crate root). The list of programs is in the crate doc.
mod cap_capable;
mod cgroup;
mod epoch;
mod io_uring;
mod sched_migrate;
mod sched_process;
mod sys_enter;
