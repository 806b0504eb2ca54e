/* cgroup_file.c - the kernfs files of one cgroup: small reads and writes,
 * flat-keyed values ("populated 1"), the controllers, the members (counted,
 * or each sent a signal), and removing a cgroup with the sub-cgroups a member
 * made. Part of the cgroup module (cgroup_internal.h).
 * Errors: functions return a negative errno (or -ESRCH: nobody to signal). */
#include "cgroup_internal.h"

#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIGNAL_PASSES 16       /* tree signals: re-read the members this often */
#define SIGNAL_MAX_PIDS 65536  /* ... and remember at most this many */
#define RMDIR_DEPTH 16         /* sub-cgroups a member made, removed this deep */

int cg_write_at(int dirfd, const char *name, const char *val)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC), e;
    size_t len = strlen(val);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, val, len);
    e = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
    close(fd);
    return e;
}

/* Read a small file into buf (NUL-terminated). Length or -errno. A cgroup
 * file is a kernel seq_file: a read is filled until it has what was asked
 * for or the file's end, so a short read is the end and no second read (a
 * syscall on every exec's exit figures) is needed to see it. */
ssize_t cg_read_at(int dirfd, const char *name, char *buf, size_t size)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    if (fd < 0)
        return -errno;
    while (len + 1 < size) {
        size_t want = size - 1 - len;
        ssize_t n = read(fd, buf + len, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if ((size_t)n < want)
            break;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* The number after "key " in a flat-keyed file ("populated 1\nfrozen 0"). */
int cg_keyed_u64(const char *buf, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, key, klen) && p[klen] == ' ') {
            *out = strtoull(p + klen + 1, NULL, 10);
            return 0;
        }
    }
    return -ENOENT;
}

int cg_events_key(int dirfd, const char *key)
{
    char buf[256];
    uint64_t v = 0;
    ssize_t n = cg_read_at(dirfd, "cgroup.events", buf, sizeof buf);
    if (n < 0)
        return (int)n;
    if (cg_keyed_u64(buf, key, &v) < 0)
        return -ENOENT;
    return v ? 1 : 0;
}

static unsigned parse_controllers(const char *buf)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"cpu", CG_CPU}, {"memory", CG_MEMORY}, {"pids", CG_PIDS}, {"io", CG_IO}};
    unsigned bits = 0;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", buf);
    for (char *save = NULL, *t = strtok_r(tmp, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(t, names[i].name))
                bits |= names[i].bit;
    return bits;
}

unsigned cg_read_controllers(int dirfd, const char *file)
{
    char buf[512];
    return cg_read_at(dirfd, file, buf, sizeof buf) < 0 ? 0 : parse_controllers(buf);
}

/* Enable in dirfd's children every controller it has that we use. */
void cg_enable_controllers(int dirfd, const char *where)
{
    static const char *names[] = {"cpu", "memory", "pids", "io"};
    unsigned have = cg_read_controllers(dirfd, "cgroup.controllers");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char op[16];
        if (!(have & (1u << i)))
            continue;
        snprintf(op, sizeof op, "+%s", names[i]);
        int rc = cg_write_at(dirfd, "cgroup.subtree_control", op);
        if (rc < 0)
            log_warn("cgroups: cannot enable the %s controller in %s: %s", names[i], where,
                     strerror(-rc));
    }
}

/* Remove a cgroup directory and any sub-cgroups a member made in it. */
void cg_remove_tree_at(int dirfd, const char *name, int depth)
{
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return;
    if (errno != EBUSY || depth >= RMDIR_DEPTH)
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((de = readdir(d)))
        if (de->d_type == DT_DIR && de->d_name[0] != '.')
            cg_remove_tree_at(fd, de->d_name, depth + 1);
    closedir(d);
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* pids seen by a tree signal, sorted for bsearch. */
typedef struct pidset {
    pid_t *v;
    size_t n, cap;
} pidset_t;

static int pid_cmp(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return x < y ? -1 : x > y;
}

/* Signal every process listed in dirfd's cgroup.procs and its sub-cgroups
 * that is not in seen; returns how many were new. */
static int signal_pass(int dirfd, int sig, pidset_t *seen, size_t sorted, int depth)
{
    int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC), fresh = 0;
    char buf[4096];
    size_t have = 0;
    if (fd < 0)
        return 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *p = buf, *nl;
        while ((nl = strchr(p, '\n'))) {
            *nl = 0;
            pid_t pid = (pid_t)atoi(p);
            p = nl + 1;
            if (pid <= 0 || (sorted && bsearch(&pid, seen->v, sorted, sizeof *seen->v, pid_cmp)))
                continue;
            if (seen->n == seen->cap) {
                pid_t *v;
                if (seen->cap >= SIGNAL_MAX_PIDS ||
                    !(v = util_grow(seen->v, &seen->cap, seen->n, sizeof *v, 256)))
                    continue;
                seen->v = v;
            }
            seen->v[seen->n++] = pid;
            if (kill(pid, sig) == 0)
                fresh++;
        }
        have = strlen(p);
        memmove(buf, p, have);
    }
    close(fd);
    if (depth < RMDIR_DEPTH) {
        int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        struct dirent *de;
        if (!d && dfd >= 0)
            close(dfd);
        while (d && (de = readdir(d))) {
            if (de->d_type != DT_DIR || de->d_name[0] == '.')
                continue;
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sub >= 0) {
                fresh += signal_pass(sub, sig, seen, sorted, depth + 1);
                close(sub);
            }
        }
        if (d)
            closedir(d);
    }
    return fresh;
}

/* Any signal to every member: the members are read again until a pass finds
 * nobody new (a process forked while we read gets it in the next pass). */
int cg_signal_tree(int dirfd, int sig)
{
    pidset_t seen = {0};
    int total = 0;
    for (int pass = 0; pass < SIGNAL_PASSES; pass++) {
        size_t sorted = seen.n;
        int fresh = signal_pass(dirfd, sig, &seen, sorted, 0);
        total += fresh;
        if (seen.n > sorted)
            qsort(seen.v, seen.n, sizeof *seen.v, pid_cmp);
        if (seen.n == sorted)
            break;
    }
    free(seen.v);
    return total ? 0 : -ESRCH;
}

uint32_t cg_count_procs(int dirfd)
{
    char buf[4096];
    uint32_t n = 0;
    int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == '\n';
    }
    close(fd);
    return n;
}
