/* lc_detect.c - noticing a restore without being told: the VM generation
 * ID uevent, and a jump of the wall clock against the monotonic one. Each
 * sign goes to lc_restore_noticed, which counts one restore however many
 * signs come. See lc_internal.h. */
#include "lc_internal.h"

#include "config.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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

void lc_detect_start(struct ev_loop *loop)
{
    g_loop = loop;
    uevent_open();
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
    g_loop = NULL;
}
