/* spawn.c - see spawn.h.
 *
 * The child runs on a separate stack in the parent's memory (clone with
 * CLONE_VM | CLONE_VFORK, as glibc's posix_spawn does), so starting a process
 * does not copy the agent's page tables. Until exec the child may therefore
 * touch nothing but its own stack: everything (argv, envp, the PATH) is
 * prepared by the parent, and the set*id calls are raw system calls (glibc's
 * wrappers would try to synchronise the parent's threads). All signals are
 * blocked around the clone so no handler of the agent runs in the child; the
 * child sets every disposition to default and then unblocks everything.
 * A failure before exec is written by the child into the parent's memory
 * (as glibc does), so no error pipe is needed.
 * Under AddressSanitizer a plain fork is used: its runtime does not expect a
 * second task on the parent's memory.
 *
 * The vfork-style child also shares the agent's descriptor table
 * (CLONE_FILES) instead of getting a copy: copying it, and closing the copy
 * before exec, costs time in proportion to the descriptors the agent holds
 * (measured here: a /bin/true round trip 1.3 ms with 0 other descriptors,
 * 2.2 ms with 5,000 and 3.3 ms with 10,000; an agent with 1,000 followed
 * processes holds about 5,000). The few descriptors the child needs are put
 * in slots, low descriptors reserved at start-up, and the child's first act
 * is close_range(CLOSE_RANGE_UNSHARE) from just above the slots: the kernel
 * copies only the descriptors below that, so a start costs the same with 10
 * or 10,000 connections and pipes open. Each thread that spawns (the loop's,
 * each spawner) has slots of its own; a slot always holds a descriptor
 * (/dev/null between starts), so no other thread's open() can land on it.
 *
 * A child that gets a cgroup is made with clone3(CLONE_INTO_CGROUP), so it
 * is in its cgroup from its first instruction (and counted by its pids.max
 * and memory.max). glibc has no clone3 wrapper that runs a function on a
 * new stack, so a few lines of assembly do it (x86-64, arm64). Where the
 * kernel or the architecture lacks it, the child writes itself into the
 * cgroup's cgroup.procs before anything else.
 * Errors: 0 or -errno with the failed step, as spawn.h says.
 */
#include "spawn.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SPAWN_USE_FORK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPAWN_USE_FORK 1
#endif
#endif

#define CHILD_STACK (256 * 1024)
#define SPAWNERS_MAX 4 /* spawner threads: one per CPU, at most this many */

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1u << 1)
#endif

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* The kernel's struct clone_args (version 2, with cgroup). */
struct spawn_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};

/* Set once clone3 or CLONE_INTO_CGROUP turned out missing: the fallback
 * is used from then on. */
static int g_no_clone3;

#if !defined(SPAWN_USE_FORK) && defined(SYS_close_range)
#define SPAWN_SHARE_FILES 1
/* Descriptor slots (see the top of this file): in, out, err, cgroup. */
enum { SLOT_IN, SLOT_OUT, SLOT_ERR, SLOT_CG, N_SLOTS };
#define SLOT_SETS (1 + SPAWNERS_MAX) /* the loop's thread, each spawner */
static int g_slots[SLOT_SETS][N_SLOTS];
static int g_slot_sets; /* sets reserved: 1 + spawners, or 0 */
static int g_slot_null = -1; /* what a slot holds between starts */
static __thread int *t_slots; /* this thread's set; NULL: no sharing */
/* Set once the kernel refused close_range(CLOSE_RANGE_UNSHARE) (before
 * 5.9): children get a copy of the table from then on. */
static int g_no_share;
#endif

#if !defined(SPAWN_USE_FORK) && (defined(__x86_64__) || defined(__aarch64__))
#define SPAWN_HAVE_CLONE3_STACK 1
/* clone3(args, size); the child runs fn(arg) on args->stack and exits with
 * its result. Returns the child's pid or -errno. The child has none of the
 * caller's frame, hence assembly. */
long spawn_clone3_fn(struct spawn_clone_args *args, size_t size, int (*fn)(void *), void *arg);
#if defined(__x86_64__)
__asm__(".pushsection .text\n"
        ".globl spawn_clone3_fn\n"
        ".hidden spawn_clone3_fn\n"
        ".type spawn_clone3_fn,@function\n"
        "spawn_clone3_fn:\n"
        "  endbr64\n"
        "  mov %rcx, %r8\n"   /* arg: syscall clobbers rcx */
        "  mov $435, %eax\n"  /* SYS_clone3 */
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jz 1f\n"
        "  ret\n"
        "1:\n"
        "  xor %ebp, %ebp\n"
        "  mov %r8, %rdi\n"
        "  call *%rdx\n"
        "  mov %eax, %edi\n"
        "  mov $60, %eax\n"   /* SYS_exit */
        "  syscall\n"
        "  hlt\n"
        ".size spawn_clone3_fn, .-spawn_clone3_fn\n"
        ".popsection\n");
#else
__asm__(".pushsection .text\n"
        ".globl spawn_clone3_fn\n"
        ".hidden spawn_clone3_fn\n"
        ".type spawn_clone3_fn,%function\n"
        "spawn_clone3_fn:\n"
        "  mov x8, #435\n"    /* SYS_clone3 */
        "  svc #0\n"
        "  cbz x0, 1f\n"
        "  ret\n"
        "1:\n"
        "  mov x29, xzr\n"
        "  mov x30, xzr\n"
        "  mov x0, x3\n"
        "  blr x2\n"
        "  mov x8, #93\n"     /* SYS_exit */
        "  svc #0\n"
        "  brk #0\n"
        ".size spawn_clone3_fn, .-spawn_clone3_fn\n"
        ".popsection\n");
#endif
#endif
#define KSIGSET_SIZE 8 /* the kernel's sigset_t */

typedef struct child_ctx {
    const spawn_req_t *r;
    int err_fd; /* fork: the close-on-exec error pipe; clone: -1 */
    /* clone (CLONE_VM): the child writes its failure here, in the parent's
     * memory, before it exits; the parent reads it once it resumes. */
    volatile int stage, err;
    int in_cgroup; /* clone3 put the child in its cgroup already */
    uint64_t changed; /* bit sig-1: the agent's disposition is not SIG_DFL */
    /* The descriptors the child uses: r's own, or the slots holding them. */
    int fd_in, fd_out, fd_err, cgroup_fd;
    /* Sharing the agent's table (CLONE_FILES): descriptors from keep on are
     * dropped from the child's private copy first thing. */
    int share;
    unsigned keep, filled; /* filled: bit i, slot i holds one of them */
    volatile int unshare_failed;
} child_ctx_t;

/* The signals whose disposition the agent changed (handlers, SIG_IGN).
 * Asked of the kernel once, at the first start, after the agent has set
 * up its signals: the child then resets those few instead of all 64 while
 * the loop waits for its exec. */
static uint64_t changed_signals(void)
{
    static uint64_t set;
    static int known;
    if (!known) {
        for (int sig = 1; sig < 65; sig++) {
            struct sigaction sa;
            if (sig == SIGKILL || sig == SIGSTOP)
                continue;
            /* Unknown to libc (its own reserved real-time signals): reset. */
            if (sigaction(sig, NULL, &sa) < 0 || sa.sa_handler != SIG_DFL)
                set |= 1ull << (sig - 1);
        }
        known = 1;
    }
    return set;
}

typedef struct child_err {
    int stage;
    int err;
} child_err_t;

const char *spawn_stage_name(enum spawn_stage s)
{
    switch (s) {
    case SPAWN_OK: return "ok";
    case SPAWN_FORK: return "fork";
    case SPAWN_SESSION: return "setsid";
    case SPAWN_TTY: return "controlling terminal";
    case SPAWN_FDS: return "descriptors";
    case SPAWN_GROUPS: return "setgroups";
    case SPAWN_GID: return "setgid";
    case SPAWN_UID: return "setuid";
    case SPAWN_CWD: return "chdir";
    case SPAWN_EXEC: return "exec";
    case SPAWN_CGROUP: return "cgroup";
    }
    return "?";
}

__attribute__((noreturn)) static void child_fail(child_ctx_t *x, int stage, int err)
{
    if (x->err_fd < 0) {
        x->stage = stage;
        x->err = err ? err : EIO;
    } else {
        child_err_t e = {stage, err};
        ssize_t w = write(x->err_fd, &e, sizeof e);
        (void)w; /* nothing to do if this write fails */
    }
    _exit(127);
}

/* execvp's search, over the PATH the parent chose, without allocating. */
static int child_exec(const spawn_req_t *r)
{
    char buf[4096];
    size_t clen = strlen(r->command);
    int saw_eacces = 0;
    const char *p = r->path;

    if (strchr(r->command, '/')) {
        execve(r->command, r->argv, r->envp);
        return errno;
    }
    if (clen + 2 > sizeof buf)
        return ENAMETOOLONG;
    for (;;) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        if (dlen + clen + 2 <= sizeof buf) {
            if (dlen) {
                memcpy(buf, p, dlen);
                buf[dlen] = '/';
                memcpy(buf + dlen + 1, r->command, clen + 1);
            } else {
                memcpy(buf, r->command, clen + 1); /* empty entry: the cwd */
            }
            execve(buf, r->argv, r->envp);
            switch (errno) {
            case EACCES:
                saw_eacces = 1;
                break;
            case ENOENT:
            case ENOTDIR:
            case ESTALE:
            case ENODEV:
            case ETIMEDOUT:
            case ELOOP:
            case ENAMETOOLONG:
                break;
            default:
                return errno; /* E2BIG, ENOEXEC, ETXTBSY...: this is the file */
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    return saw_eacces ? EACCES : ENOENT;
}

/* In the child: the user's groups and ids (raw calls: glibc's wrappers
 * would signal the parent's threads), then its directory. */
static void child_become_user(child_ctx_t *x, const spawn_req_t *r)
{
    if (r->set_user) {
        if (syscall(SYS_setgroups, (size_t)r->n_groups, r->groups) < 0)
            child_fail(x, SPAWN_GROUPS, errno);
        if (syscall(SYS_setresgid, r->gid, r->gid, r->gid) < 0)
            child_fail(x, SPAWN_GID, errno);
        if (syscall(SYS_setresuid, r->uid, r->uid, r->uid) < 0)
            child_fail(x, SPAWN_UID, errno);
    }
    if (r->cwd && r->cwd[0]) {
        if (chdir(r->cwd) < 0)
            child_fail(x, SPAWN_CWD, errno);
    } else if (r->home && r->home[0] && chdir(r->home) < 0 && chdir("/") < 0) {
        child_fail(x, SPAWN_CWD, errno);
    }
}

static int child_main(void *arg)
{
    child_ctx_t *x = arg;
    const spawn_req_t *r = x->r;
    uint8_t kzero[32];
    int fd;

    /* A table of its own, with only the descriptors below the slots' end:
     * until this returns, anything the child opened or closed would be the
     * agent's. Where the kernel cannot, the parent tries again without
     * sharing. */
#ifdef SPAWN_SHARE_FILES
    if (x->share && syscall(SYS_close_range, x->keep, ~0u, CLOSE_RANGE_UNSHARE) < 0) {
        x->unshare_failed = 1;
        _exit(127);
    }
#endif
    /* Into the cgroup before anything else runs (clone3 did it already
     * where it could). */
    if (r->into_cgroup && !x->in_cgroup) {
        if ((fd = openat(x->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC)) < 0)
            child_fail(x, SPAWN_CGROUP, errno);
        if (write(fd, "0", 1) != 1)
            child_fail(x, SPAWN_CGROUP, errno);
        close(fd);
    }
    /* Default dispositions for every signal the agent changed: ignored ones
     * (SIGPIPE) would stay ignored across exec, and handlers must not run on
     * the shared memory. The others are default already. */
    memset(kzero, 0, sizeof kzero);
    for (int sig = 1; sig < 65; sig++)
        if (x->changed >> (sig - 1) & 1)
            syscall(SYS_rt_sigaction, sig, kzero, NULL, KSIGSET_SIZE);

    if (r->pty) {
        if (setsid() < 0)
            child_fail(x, SPAWN_SESSION, errno);
        if (ioctl(x->fd_in, TIOCSCTTY, 0) < 0)
            child_fail(x, SPAWN_TTY, errno);
    } else if (setpgid(0, 0) < 0) {
        child_fail(x, SPAWN_SESSION, errno);
    }
    /* The agent keeps 0..2 open, so these fds are all above 2 and dup2
     * clears their close-on-exec flag. */
    if (dup2(x->fd_in, 0) < 0 || dup2(x->fd_out, 1) < 0 || dup2(x->fd_err, 2) < 0)
        child_fail(x, SPAWN_FDS, errno);
    if (r->reset_oom && (fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC)) >= 0) {
        ssize_t w = write(fd, "0", 1);
        (void)w; /* nothing to do if this write fails */
        close(fd);
    }
    child_become_user(x, r);
    /* Everything the agent opens is close-on-exec; this is the backstop
     * (keeping the error pipe, which exec closes). */
#ifdef SYS_close_range
    if (x->err_fd < 0) {
        syscall(SYS_close_range, 3u, ~0u, 0u);
    } else {
        if (x->err_fd > 3)
            syscall(SYS_close_range, 3u, (unsigned)x->err_fd - 1, 0u);
        syscall(SYS_close_range, (unsigned)x->err_fd + 1, ~0u, 0u);
    }
#endif
    /* Last, so the child runs at the agent's priority until it execs (the
     * agent's loop waits for that): raising a nice value needs no privilege. */
    if (r->reset_nice)
        syscall(SYS_setpriority, PRIO_PROCESS, 0, 0);
    memset(kzero, 0, sizeof kzero);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, kzero, NULL, KSIGSET_SIZE);
    child_fail(x, SPAWN_EXEC, child_exec(r));
}

#ifdef SPAWN_SHARE_FILES
/* Reserve the slots, while the agent's descriptors are few (at start-up):
 * the lower they are, the less a child copies. A set for the loop's thread
 * and each spawner that may run; none when they would take more than a
 * sixteenth of RLIMIT_NOFILE (an agent started with 32 descriptors needs
 * them for its sockets more than for faster starts). On any failure there
 * are none, and children get a copy of the table as before. */
static void slots_init(int sets)
{
    struct rlimit rl;
    int n = 0, want = sets * N_SLOTS;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
        (rl.rlim_cur != RLIM_INFINITY && (rlim_t)(want + 1) * 16 > rl.rlim_cur))
        return;
    if ((g_slot_null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        return;
    for (; n < want; n++)
        if ((g_slots[n / N_SLOTS][n % N_SLOTS] = fcntl(g_slot_null, F_DUPFD_CLOEXEC, 3)) < 0)
            break;
    if (n == want) {
        g_slot_sets = sets;
        t_slots = g_slots[0]; /* the loop's thread: spawn_async_init runs on it */
        return;
    }
    while (n-- > 0)
        close(g_slots[n / N_SLOTS][n % N_SLOTS]);
    close(g_slot_null);
    g_slot_null = -1;
}

/* Give the slots back their /dev/null: the child has its own copy (or
 * exec'd), and a pipe's write end left in a slot would keep its reader
 * from ever seeing end of file. */
static void slots_clear(child_ctx_t *x)
{
    for (int i = 0; x->share && i < N_SLOTS; i++)
        if (x->filled >> i & 1)
            dup3(g_slot_null, t_slots[i], O_CLOEXEC);
    x->filled = 0;
}

/* The child's descriptors into this thread's slots, so it can share the
 * table: x->share says whether it does. */
static void slots_fill(const spawn_req_t *r, child_ctx_t *x)
{
    const int want[N_SLOTS] = {r->fd_in, r->fd_out, r->fd_err,
                               r->into_cgroup ? r->cgroup_fd : -1};
    int *s = t_slots;
    x->share = 0;
    x->filled = 0;
    if (!s || __atomic_load_n(&g_no_share, __ATOMIC_RELAXED))
        return;
    x->share = 1;
    x->keep = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        if (want[i] < 0)
            continue;
        if (dup3(want[i], s[i], O_CLOEXEC) < 0) {
            slots_clear(x);
            x->share = 0;
            return;
        }
        x->filled |= 1u << i;
        if ((unsigned)s[i] >= x->keep)
            x->keep = (unsigned)s[i] + 1;
    }
    x->fd_in = s[SLOT_IN];
    x->fd_out = s[SLOT_OUT];
    x->fd_err = s[SLOT_ERR];
    x->cgroup_fd = r->into_cgroup ? s[SLOT_CG] : -1;
}
#else
static void slots_init(int sets) {}
#ifndef SPAWN_USE_FORK
static void slots_clear(child_ctx_t *x) { x->share = 0; }
static void slots_fill(const spawn_req_t *r, child_ctx_t *x) { x->share = 0; }
#endif
#endif

/* clone3 into the cgroup is worth trying for r. */
static inline int want_clone3(const spawn_req_t *r)
{
    return r->into_cgroup && !r->cgroup_by_procs && !__atomic_load_n(&g_no_clone3, __ATOMIC_RELAXED);
}

/* clone3 failed with e: 1 when the kernel lacks it or CLONE_INTO_CGROUP
 * (remembered: the plain way from now on), 0 when the cgroup refused. */
static inline int clone3_missing(int e)
{
    if (e != ENOSYS && e != EINVAL && e != E2BIG)
        return 0;
    __atomic_store_n(&g_no_clone3, 1, __ATOMIC_RELAXED);
    return 1;
}

/* The child could not be made: -e, and with a cgroup that refused it
 * (removed, or not a leaf) the stage says so. */
static int start_failed(const spawn_req_t *r, int e, enum spawn_stage *stage)
{
    if (r->into_cgroup && e != EAGAIN && e != ENOMEM)
        *stage = SPAWN_CGROUP;
    return -e;
}

/* The child uses r's own descriptors (not slots). */
static void ctx_own_fds(child_ctx_t *x, const spawn_req_t *r)
{
    x->fd_in = r->fd_in;
    x->fd_out = r->fd_out;
    x->fd_err = r->fd_err;
    x->cgroup_fd = r->cgroup_fd;
}

#ifdef SPAWN_USE_FORK
/* fork: the child's memory is its own, so a failure comes back through a
 * close-on-exec pipe (EOF means exec succeeded). Returns the child's pid
 * with *ce its failure before exec (err 0: none), or -errno. */
static int start_child(child_ctx_t *x, const spawn_req_t *r, child_err_t *ce,
                       enum spawn_stage *stage)
{
    sigset_t all, old;
    pid_t child;
    int e;
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0)
        return -errno;
    x->err_fd = ep[1];
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    child = -1;
    e = ENOSYS;
    int plain = 1; /* fork, then (with into_cgroup) join through cgroup.procs */
#ifdef SYS_clone3
    if (want_clone3(r)) {
        /* Without CLONE_VM clone3 returns twice, as fork does. */
        struct spawn_clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_INTO_CGROUP;
        ca.exit_signal = SIGCHLD;
        ca.cgroup = (uint64_t)r->cgroup_fd;
        x->in_cgroup = 1;
        child = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
        if (child == 0)
            child_main(x);
        e = errno;
        plain = child < 0 && clone3_missing(e);
        x->in_cgroup = 0;
    }
#endif
    if (plain) {
        child = fork();
        if (child == 0)
            child_main(x);
        e = errno;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(ep[1]);
    if (child < 0) {
        close(ep[0]);
        return start_failed(r, e, stage);
    }
    ssize_t n;
    do
        n = read(ep[0], ce, sizeof *ce);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n != (ssize_t)sizeof *ce)
        ce->err = 0;
    return child;
}
#else
/* One clone(CLONE_VM | CLONE_VFORK), sharing the descriptor table when
 * x->share: this thread resumes once the child has exec'd or exited. The
 * child's pid, or -errno. */
static int clone_child(child_ctx_t *x, const spawn_req_t *r, void *stack,
                       enum spawn_stage *stage)
{
    sigset_t all, old;
    pid_t child;
    int e;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    child = -1;
    e = ENOSYS;
    int plain = 1; /* clone, then (with into_cgroup) join through cgroup.procs */
    uint64_t files = x->share ? CLONE_FILES : 0;
#ifdef SPAWN_HAVE_CLONE3_STACK
    if (want_clone3(r)) {
        struct spawn_clone_args ca;
        long rc;
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP | files;
        ca.exit_signal = SIGCHLD;
        ca.stack = (uint64_t)(uintptr_t)stack;
        ca.stack_size = CHILD_STACK;
        ca.cgroup = (uint64_t)r->cgroup_fd;
        x->in_cgroup = 1;
        rc = spawn_clone3_fn(&ca, sizeof ca, child_main, x);
        child = rc < 0 ? -1 : (pid_t)rc;
        e = rc < 0 ? (int)-rc : 0;
        plain = rc < 0 && clone3_missing(e);
        x->in_cgroup = 0;
    }
#endif
    if (plain) {
        child = clone(child_main, (char *)stack + CHILD_STACK,
                      CLONE_VM | CLONE_VFORK | (int)files | SIGCHLD, x);
        e = errno;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return child < 0 ? start_failed(r, e, stage) : child;
}

/* The vfork-style child: a failure is already in x, written by the child.
 * Returns the child's pid with *ce its failure before exec (err 0: none),
 * or -errno. */
static int start_child(child_ctx_t *x, const spawn_req_t *r, child_err_t *ce,
                       enum spawn_stage *stage)
{
    /* One stack per thread serves every spawn of that thread: it waits
     * (CLONE_VFORK); the loop's thread and the spawner may spawn at once. */
    static __thread void *stack;
    int child;
    if (!stack) {
        void *s = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (s == MAP_FAILED)
            return -errno;
        stack = s;
    }
    x->err_fd = -1;
    slots_fill(r, x);
    while ((child = clone_child(x, r, stack, stage)) >= 0 && x->unshare_failed) {
        /* The kernel has no CLOSE_RANGE_UNSHARE: again, with a copy. */
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        __atomic_store_n(&g_no_share, 1, __ATOMIC_RELAXED);
        slots_clear(x);
        x->share = 0;
        ctx_own_fds(x, r);
        x->unshare_failed = 0;
        x->stage = x->err = 0;
    }
    slots_clear(x);
    if (child < 0)
        return child;
    ce->stage = x->stage;
    ce->err = x->err;
    return child;
}
#endif

int spawn_run(const spawn_req_t *r, pid_t *pid, enum spawn_stage *stage)
{
    child_ctx_t x;
    child_err_t ce = {0, 0};
    int child;

    *stage = SPAWN_FORK;
    x.r = r;
    x.stage = 0;
    x.err = 0;
    x.in_cgroup = 0;
    x.changed = changed_signals();
    ctx_own_fds(&x, r);
    x.share = 0;
    x.keep = x.filled = 0;
    x.unshare_failed = 0;
    if ((child = start_child(&x, r, &ce, stage)) < 0)
        return child;
    if (ce.err) {
        *stage = (enum spawn_stage)ce.stage;
        /* Reap it here so it never reaches the process table. */
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        return -ce.err;
    }
    *stage = SPAWN_OK;
    *pid = child;
    return 0;
}

/* ------------------------------------------------------------ spawner */

/* One spawner thread, and more (up to one per CPU) while every one is busy
 * and starts wait: a spawner waits in each vfork until the child has
 * exec'd, so with one, children exec'd one at a time however many CPUs were
 * idle (64 clients starting at once got 0.80x the starts a second of 64
 * threads calling posix_spawn). They stay once started (idle_s 0): each
 * keeps its slots. */
static jobq_fn spawner_run, spawner_done;
static jobq_t g_spawner = {
    .name = "spawner",
    .run = spawner_run,
    .done = spawner_done,
    .min_threads = 1,
    .max_threads = 1, /* set by spawn_async_init */
    .stack_size = 128 * 1024,
    .block_signals = 1, /* signals stay with the loop's thread */
};

static void spawner_run(jobq_node_t *n)
{
    spawn_job_t *j = SA_CONTAINER_OF(n, spawn_job_t, _node);
#ifdef SPAWN_SHARE_FILES
    /* A spawner's own slots, at its first job (the loop's thread has
     * g_slots[0]). Past g_slot_sets (never, as threads stay): none, and its
     * children get a copy of the table. */
    static int next_set = 1;
    if (!t_slots && g_slot_null >= 0) {
        int i = __atomic_fetch_add(&next_set, 1, __ATOMIC_RELAXED);
        if (i < g_slot_sets)
            t_slots = g_slots[i];
    }
#endif
    j->rc = spawn_run(&j->req, &j->pid, &j->stage);
}

static void spawner_done(jobq_node_t *n)
{
    spawn_job_t *j = SA_CONTAINER_OF(n, spawn_job_t, _node);
    j->done(j); /* may free j */
}

int spawn_async_init(struct ev_loop *loop)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g_spawner.max_threads = cpus < 1 ? 1 : cpus > SPAWNERS_MAX ? SPAWNERS_MAX : (int)cpus;
    slots_init(1 + g_spawner.max_threads);
    return jobq_init(&g_spawner, loop);
}

void spawn_submit(spawn_job_t *job) { jobq_submit(&g_spawner, &job->_node); }
