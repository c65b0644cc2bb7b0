// io_uring through raw syscalls (no liburing): `io_uring nop` submits one IORING_OP_NOP;
// `io_uring mkdir PATH` creates PATH with IORING_OP_MKDIRAT, which never enters mkdir(2) or
// mkdirat(2): what a seccomp profile sees is io_uring_setup and io_uring_enter only.
// Exit 0 on success; 10 + step when a step fails (errno printed).
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(int step, const char *what) {
    fprintf(stderr, "io_uring: %s: %s\n", what, strerror(errno));
    return 10 + step;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return fail(1, "io_uring_setup");
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    char *cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return fail(2, "mmap");
    unsigned *tail = (unsigned *)(sq + p.sq_off.tail);
    unsigned *mask = (unsigned *)(sq + p.sq_off.ring_mask);
    unsigned *array = (unsigned *)(sq + p.sq_off.array);
    unsigned idx = *tail & *mask;
    struct io_uring_sqe *sqe = &sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    if (strcmp(argv[1], "mkdir") == 0 && argc > 2) {
        sqe->opcode = IORING_OP_MKDIRAT;
        sqe->fd = AT_FDCWD;
        sqe->addr = (unsigned long)argv[2];
        sqe->len = 0755;
    } else {
        sqe->opcode = IORING_OP_NOP;
    }
    array[idx] = idx;
    __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, 0, 0) < 0)
        return fail(3, "io_uring_enter");
    unsigned *chead = (unsigned *)(cq + p.cq_off.head);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    unsigned cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
    struct io_uring_cqe *cqe = &cqes[*chead & cmask];
    if (cqe->res < 0) {
        errno = -cqe->res;
        return fail(4, "operation");
    }
    printf("io_uring %s ok\n", argv[1]);
    return 0;
}
