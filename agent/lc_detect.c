/* lc_detect.c - noticing a restore without being told: the VM generation
 * ID uevent, the kernel's log line for a VM fork (/dev/kmsg), a jump of the
 * wall clock against the monotonic one, and the RTC moving ahead of the
 * wall clock (a pause). Each
 * sign goes to lc_restore_noticed, which counts one restore however many
 * signs come. See lc_internal.h. */
#include "lc_internal.h"

#include "config.h"
#include "fsworker.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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
static int g_rtc_busy;      /* a read is with a worker */
static int g_rtc_off;       /* no RTC here, or --rtc off */
static int g_rtc_base_ok;   /* g_rtc_base holds the last offset */
static int64_t g_rtc_base;  /* RTC - REALTIME at the last look, ns */
static unsigned g_rtc_epoch; /* moved by the agent's own clock steps */
static unsigned g_rtc_reads; /* the first RTC_COST_READS reads' cost is logged */
static uint64_t g_rtc_ns_sum, g_rtc_ns_max;
#define RTC_COST_READS 10

/* ------------------------------------------------------------ the clocks */

/* Tests: "REALTIME MONOTONIC BOOTTIME [RTC]" from --clock-test-file; how
 * many of the four numbers it holds, or -1. */
static int read_test_clocks(long long v[4])
{
    char buf[160];
    int fd = open(g_config.clock_test_file, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return sscanf(buf, "%lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3]);
}

static int read_clocks(int64_t *rt, int64_t *mono, int64_t *boot)
{
    struct timespec a, b, c;
    if (g_config.clock_test_file) {
        long long v[4] = {0};
        if (read_test_clocks(v) < 3)
            return -1;
        *rt = v[0];
        *mono = v[1];
        *boot = v[2];
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
    g_rtc_epoch++;
    g_rtc_base_ok = 0;
}

/* ------------------------------------------------------------ the RTC */

/* QEMU's RTC (the CMOS clock, driven by the host's clock unless -rtc
 * clock=vm) keeps the host's time across a pause: QMP stop and cont, or a
 * save and a restore. The guest's wall clock does not: kvmclock stands
 * still while the VM is paused. So the RTC moving ahead of CLOCK_REALTIME
 * by more than --clock-jump-ms between two looks says the VM was paused,
 * even when nothing else does (a resume keeps the generation ID). The RTC
 * has whole seconds, so smaller moves are noise. Only ahead counts: the
 * wall clock stepped forward (Restored, NTP) moves the other way. Reading
 * it (RTC_RD_TIME) is port I/O that may wait out an update in progress
 * (up to 10 ms), so a file worker does it, one read at a time, on the
 * clock watch's timer. */
typedef struct rtc_read {
    fsw_job_t job;
    int64_t rtc_s;  /* the RTC, seconds since the epoch as it reads them */
    int64_t rt_ns;  /* CLOCK_REALTIME right after */
    int err;        /* -errno */
    unsigned epoch; /* g_rtc_epoch when it was asked for */
    uint64_t ns;    /* what the read cost the worker */
} rtc_read_t;

static rtc_read_t g_rtc;

/* On a worker. */
static void rtc_run(fsw_job_t *j)
{
    rtc_read_t *r = (rtc_read_t *)j;
    struct rtc_time tm;
    struct tm t;
    struct timespec ts;

    if (g_config.clock_test_file) {
        long long v[4] = {0};
        int n = read_test_clocks(v);
        /* A file of three clocks: no RTC. */
        r->err = n < 0 ? -EIO : n < 4 ? -ENODEV : 0;
        r->rtc_s = v[3];
        r->rt_ns = v[0];
        return;
    }
    uint64_t t0 = util_now_mono_nano();
    int fd = open(g_config.rtc_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r->err = -errno;
        return;
    }
    memset(&tm, 0, sizeof tm);
    r->err = ioctl(fd, RTC_RD_TIME, &tm) < 0 ? -errno : 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    close(fd);
    r->ns = util_now_mono_nano() - t0;
    if (r->err)
        return;
    memset(&t, 0, sizeof t);
    t.tm_sec = tm.tm_sec;
    t.tm_min = tm.tm_min;
    t.tm_hour = tm.tm_hour;
    t.tm_mday = tm.tm_mday;
    t.tm_mon = tm.tm_mon;
    t.tm_year = tm.tm_year;
    r->rtc_s = (int64_t)timegm(&t);
    r->rt_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Say once what watching the RTC costs: the first reads' time. */
static void rtc_cost(uint64_t ns)
{
    if (g_rtc_reads >= RTC_COST_READS || g_config.clock_test_file)
        return;
    g_rtc_ns_sum += ns;
    g_rtc_ns_max = ns > g_rtc_ns_max ? ns : g_rtc_ns_max;
    if (++g_rtc_reads == RTC_COST_READS)
        log_info("rtc: watching %s every %u ms; a read (open, RTC_RD_TIME, close) took "
                 "%.3f ms on average, %.3f ms at most, on a file worker",
                 g_config.rtc_path, g_config.clock_check_ms,
                 (double)g_rtc_ns_sum / RTC_COST_READS / 1e6, (double)g_rtc_ns_max / 1e6);
}

/* On the loop. */
static void rtc_done(fsw_job_t *j)
{
    rtc_read_t *r = (rtc_read_t *)j;
    int64_t thr = (int64_t)g_config.clock_jump_ms * 1000000;

    g_rtc_busy = 0;
    if (!g_loop)
        return; /* stopped meanwhile */
    if (r->epoch != g_rtc_epoch)
        return; /* read before the agent stepped the clock: no news */
    if (r->err) {
        /* Busy: someone else (hwclock) has it open; look again later. */
        if (r->err != -EBUSY) {
            log_info("rtc: %s: %s; the RTC is not watched", g_config.rtc_path,
                     strerror(-r->err));
            g_rtc_off = 1;
        }
        return;
    }
    rtc_cost(r->ns);
    int64_t off = r->rtc_s * 1000000000 - r->rt_ns, d = off - g_rtc_base;
    int had = g_rtc_base_ok;
    g_rtc_base = off;
    g_rtc_base_ok = 1;
    if (had && d > thr) {
        log_info("rtc: the RTC moved %+.0f s ahead of the wall clock: the VM was paused; "
                 "taking it as a restore",
                 (double)d / 1e9);
        lc_restore_noticed("rtc");
    }
}

static void rtc_check(void)
{
    if (g_rtc_off || g_rtc_busy)
        return;
    memset(&g_rtc, 0, sizeof g_rtc);
    g_rtc.job.run = rtc_run;
    g_rtc.job.done = rtc_done;
    g_rtc.epoch = g_rtc_epoch;
    g_rtc_busy = 1;
    fsw_submit(&g_rtc.job);
}

/* The wall clock and the monotonic clock advance together while the VM
 * runs; the offset between them moves only when the wall clock is stepped
 * (a hypervisor or NTP correcting it after a restore). BOOTTIME moves
 * ahead of MONOTONIC only across a suspend of the guest. */
static void on_clock(struct ev_loop *loop, ev_timer *w, int revents)
{
    int64_t rt, mono, boot, thr = (int64_t)g_config.clock_jump_ms * 1000000;
    rtc_check();
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
        ssize_t n = util_read(w->fd, buf, sizeof buf);
        if (n > 0) {
            found |= kmsg_feed(buf, (size_t)n);
            continue;
        }
        if (n == -EAGAIN)
            break;
        if (n == -EPIPE) {
            /* Overwritten before read; the next read gives the oldest
             * record left. Not a reason to stop. */
            log_warn("kmsg: kernel log records were overwritten before they were read");
            g_kmsg_have_seq = 0;
            continue;
        }
        log_warn("kmsg: %s: %s; no longer watching the kernel log", g_config.kmsg_path,
                 n == 0 ? "end of file" : strerror((int)-n));
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
    g_rtc_off = !g_config.rtc_path;
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
