//! What `cargo xtask setup` makes and the integration tests use, named once: the container
//! images, the tests' private podman storage, and the tools' folders. The integration tests
//! (`tests/`, crate `integration-tests`) depend on this library for them, as aya's
//! integration crates depend on its xtask.
//!
//! Paths are relative to the workspace root.

/// The busybox image the container tests run, in Docker (no registry is reachable: made
/// locally with `docker import`).
pub const BUSYBOX_IMAGE: &str = "profiler-test/busybox:latest";
/// The same busybox image in the tests' private podman storage.
pub const PODMAN_BUSYBOX_IMAGE: &str = "localhost/profiler-busybox:latest";

/// The Debian image with real services (PostgreSQL, memcached, a Python service), in Docker.
pub const DEBIAN_APPS_IMAGE: &str = "profiler-test/debian-apps:latest";
/// The same Debian image in the tests' private podman storage.
pub const PODMAN_DEBIAN_APPS_IMAGE: &str = "localhost/profiler-debian-apps:latest";

/// The services' command lines in the Debian image, run as their own users without a shell:
/// the image build smoke-tests them (xtask/src/images.rs) and the real-image tests record them.
pub const POSTGRES_CMD: &[&str] = &[
    "/usr/lib/postgresql/15/bin/postgres",
    "-D",
    "/var/lib/postgresql/15/main",
    "-c",
    "config_file=/etc/postgresql/15/main/postgresql.conf",
];
/// memcached in the foreground with threads (it forks only with -d), TCP only.
pub const MEMCACHED_CMD: &[&str] = &[
    "/usr/bin/memcached",
    "-p",
    "11211",
    "-l",
    "0.0.0.0",
    "-U",
    "0",
];
/// Where the threaded Python service (tests/workloads/apps/service.py) is in the image.
pub const APP_SERVICE: &str = "/opt/app/service.py";
pub const APP_CMD: &[&str] = &["python3", APP_SERVICE];

/// The busybox root filesystem the busybox images are made of (static busybox, its applets
/// as symlinks, minimal passwd/group).
pub const BUSYBOX_ROOTFS: &str = "target/test-images/busybox-rootfs";

/// The tests' private podman storage (`root/`) and its `containers.conf`.
pub const PODMAN_DIR: &str = "target/test-images/podman";
/// Where podman keeps its run-time state for the tests: podman refuses a runroot longer
/// than 50 characters, so it cannot live under target/.
pub const PODMAN_RUNROOT: &str = "/run/profiler-test-podman";

/// The virtual environment with `kubernetes-validate` (`bin/kubernetes-validate`).
pub const KUBERNETES_VALIDATE_VENV: &str = "target/tools/k8s-venv";
