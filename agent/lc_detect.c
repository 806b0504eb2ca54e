/* lc_detect.c - noticing a restore without being told: the VM generation
 * ID uevent, the kernel's log line for a VM fork (/dev/kmsg), and a jump of
 * the wall clock against the monotonic one. Each
 * sign goes to lc_restore_noticed, which counts one restore however many
 * signs come. See lc_internal.h. */
#include "lc_internal.h"

#include "config.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


static struct ev_loop *g_loop; /* set while the watchers run */
static int g_nl_fd = -1;
static ev_io g_nl_io;
static ev_timer g_clock_timer;
static int64_t g_off_rt, g_off_bt;
static int g_clock_base;

/* ------------------------------------------------------------ the clocks */

static int read_clocks(int64_t *rt, int64_t *mono, int64_t *boot)
{
    struct timespec a, b, c;
    if (g_config.clock_test_file) {
        char buf[128];
        long long x, y, z;
        int fd = open(g_config.clock_test_file, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0)
            close(fd);
        if (n <= 0)
            return -1;
        buf[n] = 0;
        if (sscanf(buf, "%lld %lld %lld", &x, &y, &z) != 3)
            return -1;
        *rt = x;
        *mono = y;
        *boot = z;
        return 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_BOOTTIME, &c);
    *rt = (int64_t)a.tv_sec * 1000000000 + a.tv_nsec;
    *mono = (int64_t)b.tv_sec * 1000000000 + b.tv_nsec;
    *boot = (int64_t)c.tv_sec * 1000000000 + c.tv_nsec;
    return 0;
}

/* Take the clocks' offsets as they are now: after the agent's own step. */
void lc_detect_rebase(void)
{
    int64_t rt, mono, boot;
    if (read_clocks(&rt, &mono, &boot) < 0) {
        g_clock_base = 0;
        return;
    }
    g_off_rt = rt - mono;
    g_off_bt = boot - mono;
    g_clock_base = 1;
}

/* The wall clock and the monotonic clock advance together while the VM
 * runs; the offset between them moves only when the wall clock is stepped
 * (a hypervisor or NTP correcting it after a restore). BOOTTIME moves
 * ahead of MONOTONIC only across a suspend of the guest. */
static void on_clock(struct ev_loop *loop, ev_timer *w, int revents)
{
    int64_t rt, mono, boot, thr = (int64_t)g_config.clock_jump_ms * 1000000;
    if (read_clocks(&rt, &mono, &boot) < 0)
        return;
    int64_t off_rt = rt - mono, off_bt = boot - mono;
    if (!g_clock_base) {
        g_off_rt = off_rt;
        g_off_bt = off_bt;
        g_clock_base = 1;
        return;
    }
    int64_t d_rt = off_rt - g_off_rt, d_bt = off_bt - g_off_bt;
    g_off_rt = off_rt;
    g_off_bt = off_bt;
    if (d_rt > thr || d_rt < -thr || d_bt > thr) {
        log_info("clock: the wall clock moved %+.3f s against the monotonic clock (boot time "
                 "%+.3f s): taking it as a restore",
                 (double)d_rt / 1e9, (double)d_bt / 1e9);
        lc_emit(LK(CLOCK_STEPPED), "clock", d_rt, NULL, 0);
        lc_restore_noticed("clock");
    }
}

/* ------------------------------------------------------------ the uevent */

/* Kernel uevents: "ACTION@DEVPATH\0KEY=VALUE\0...". Only senders with uid 0
 * are believed (the kernel, or root, who could restore the VM anyway):
 * anyone in the network namespace can send to the agent's port. */
static void on_uevent(struct ev_loop *loop, ev_io *w, int revents)
{
    char buf[8192];
    char cbuf[CMSG_SPACE(sizeof(struct ucred))];
    int found = 0;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_nl sa;
        struct iovec iov = {buf, sizeof buf - 1};
        struct msghdr mh = {.msg_name = &sa, .msg_namelen = sizeof sa, .msg_iov = &iov,
                            .msg_iovlen = 1, .msg_control = cbuf,
                            .msg_controllen = sizeof cbuf};
        ssize_t n = recvmsg(w->fd, &mh, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ENOBUFS) {
                log_warn("uevent: the kernel dropped events (receive buffer full)");
                continue;
            }
            break;
        }
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        struct ucred cr;
        if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_CREDENTIALS)
            continue;
        memcpy(&cr, CMSG_DATA(cm), sizeof cr);
        if (cr.uid != 0)
            continue;
        buf[n] = 0;
        for (char *p = buf; p < buf + n; p += strlen(p) + 1)
            if (!strcmp(p, "NEW_VMGENID=1"))
                found = 1;
    }
    if (found) {
        log_info("uevent: the VM generation ID changed");
        lc_restore_noticed("vmgenid");
    }
}

static void uevent_open(void)
{
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
    int on = 1;
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    NETLINK_KOBJECT_UEVENT);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0) {
        log_warn("uevent: %s; a restore is noticed only by Restored or the clock",
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    g_nl_fd = fd;
    ev_io_init(&g_nl_io, on_uevent, fd, EV_READ);
    ev_io_start(g_loop, &g_nl_io);
    ev_unref(g_loop); /* does not keep the loop alive by itself */
}

/* ------------------------------------------------------------ the kernel log */

/* Records of /dev/kmsg: "PRIO,SEQ,TS_USEC,FLAGS[,...];TEXT\n", then
 * continuation lines " KEY=VALUE\n". The vmgenid driver, on every kernel
 * since 5.18, calls add_vmfork_randomness(), which logs this line (with the
 * random driver's "random: " prefix) when the generation ID changes; no
 * other signal reaches user space on kernels without the NEW_VMGENID
 * uevent (Debian's 6.1 and 6.12). */
#define KMSG_RECORD_MAX 8192 /* the kernel's CONSOLE_EXT_LOG_MAX */
#define KMSG_READS 64        /* records read per loop turn; the rest next turn */
static const char kmsg_vmfork[] = "random: crng reseeded due to virtual machine fork";

static int g_kmsg_fd = -1;
static ev_io g_kmsg_io;
static char g_kmsg_line[KMSG_RECORD_MAX]; /* a record being put together */
static size_t g_kmsg_len;
static int g_kmsg_skip;        /* a line too long: dropped up to its newline */
static uint64_t g_kmsg_seq;    /* the last record's sequence number */
static int g_kmsg_have_seq;

/* One line. Only records of facility 0 count: the kernel's own. A process
 * that writes to /dev/kmsg gets facility 1 (user) whatever it asks for, so
 * it cannot forge one. A gap in the sequence numbers means records were
 * overwritten before they were read (what EPIPE says on /dev/kmsg). */
static int kmsg_line(const char *line, size_t len)
{
    char head[128], *end;
    const char *semi = memchr(line, ';', len);
    size_t hl = semi ? (size_t)(semi - line) : 0;

    if (!semi || line[0] == ' ' || hl >= sizeof head)
        return 0;
    memcpy(head, line, hl);
    head[hl] = 0;
    errno = 0;
    unsigned long long prio = strtoull(head, &end, 10);
    if (errno || end == head || *end != ',')
        return 0;
    unsigned long long seq = strtoull(end + 1, &end, 10);
    if (end[0] != ',' && end[0] != 0)
        return 0;
    if (g_kmsg_have_seq && seq > g_kmsg_seq + 1)
        log_warn("kmsg: %llu kernel log records were overwritten before they were read",
                 seq - g_kmsg_seq - 1);
    g_kmsg_seq = seq;
    g_kmsg_have_seq = 1;
    if (prio >> 3 != 0)
        return 0;
    len -= hl + 1;
    return len == sizeof kmsg_vmfork - 1 && !memcmp(semi + 1, kmsg_vmfork, len);
}

/* Bytes read: whole records from /dev/kmsg (one per read), any pieces of
 * them from a pipe (tests). Returns 1 when the vmfork record was among
 * them. */
static int kmsg_feed(const char *p, size_t n)
{
    int found = 0;
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (!g_kmsg_skip && g_kmsg_len + take < sizeof g_kmsg_line) {
            memcpy(g_kmsg_line + g_kmsg_len, p, take);
            g_kmsg_len += take;
        } else {
            g_kmsg_skip = 1;
        }
        if (nl) {
            if (!g_kmsg_skip && kmsg_line(g_kmsg_line, g_kmsg_len))
                found = 1;
            g_kmsg_len = 0;
            g_kmsg_skip = 0;
            take++;
        }
        p += take;
        n -= take;
    }
    return found;
}

static void kmsg_close(void)
{
    if (g_kmsg_fd < 0)
        return;
    ev_ref(g_loop);
    ev_io_stop(g_loop, &g_kmsg_io);
    close(g_kmsg_fd);
    g_kmsg_fd = -1;
}

static void on_kmsg(struct ev_loop *loop, ev_io *w, int revents)
{
    static char buf[KMSG_RECORD_MAX];
    int found = 0;
    for (int i = 0; i < KMSG_READS; i++) {
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n > 0) {
            found |= kmsg_feed(buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == EPIPE) {
            /* Overwritten before read; the next read gives the oldest
             * record left. Not a reason to stop. */
            log_warn("kmsg: kernel log records were overwritten before they were read");
            g_kmsg_have_seq = 0;
            continue;
        }
        log_warn("kmsg: %s: %s; no longer watching the kernel log", g_config.kmsg_path,
                 n == 0 ? "end of file" : strerror(errno));
        kmsg_close();
        break;
    }
    if (found) {
        log_info("kmsg: the kernel reseeded for a virtual machine fork (the VM generation ID "
                 "changed)");
        lc_restore_noticed("kmsg");
    }
}

/* Only records logged from now on count: /dev/kmsg is read from its end,
 * and what a pipe (tests) holds already is read and dropped. A pipe is
 * opened for writing too, so that its writers leaving is no end of file. */
static void kmsg_open(void)
{
    const char *path = g_config.kmsg_path;
    struct stat st;
    char buf[4096];

    if (!path)
        return;
    int fifo = stat(path, &st) == 0 && S_ISFIFO(st.st_mode);
    int fd = open(path, (fifo ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        log_warn("kmsg: %s: %s; a restore is noticed without the kernel log", path,
                 strerror(errno));
        return;
    }
    if (lseek(fd, 0, SEEK_END) < 0)
        while (read(fd, buf, sizeof buf) > 0)
            ;
    g_kmsg_fd = fd;
    g_kmsg_len = 0;
    g_kmsg_skip = g_kmsg_have_seq = 0;
    ev_io_init(&g_kmsg_io, on_kmsg, fd, EV_READ);
    ev_io_start(g_loop, &g_kmsg_io);
    ev_unref(g_loop);
}

void lc_detect_start(struct ev_loop *loop)
{
    g_loop = loop;
    uevent_open();
    kmsg_open();
    if (g_config.clock_jump_ms) {
        ev_timer_init(&g_clock_timer, on_clock, g_config.clock_check_ms / 1000.0,
                      g_config.clock_check_ms / 1000.0);
        ev_timer_start(loop, &g_clock_timer);
        ev_unref(loop);
        lc_detect_rebase();
    }
}

void lc_detect_stop(void)
{
    if (!g_loop)
        return;
    if (g_config.clock_jump_ms) {
        ev_ref(g_loop);
        ev_timer_stop(g_loop, &g_clock_timer);
    }
    if (g_nl_fd >= 0) {
        ev_ref(g_loop);
        ev_io_stop(g_loop, &g_nl_io);
        close(g_nl_fd);
        g_nl_fd = -1;
    }
    kmsg_close();
    g_loop = NULL;
}
