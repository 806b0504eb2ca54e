/* control.c - see control.h.
 * Errors: every request is answered here, with an Error when refused. */
#include "control.h"

#include "cgroup.h"
#include "config.h"
#include "lifecycle.h"
#include "log.h"
#include "proc.h"
#include "tunnel.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

static uint64_t g_start_mono;

void control_set_start_time(void) { g_start_mono = util_now_mono_nano(); }

/* Constant-time comparison: the time taken does not tell how much of a
 * guessed token was right. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ (lb ? b[i % lb] : 0));
    return diff == 0;
}

void control_hello(conn_t *c, const Request *req)
{
    const Sandbox__Agent__V1__Hello *h = req->hello;
    Response r = RESPONSE_INIT;
    HelloReply hr = SANDBOX__AGENT__V1__HELLO_REPLY__INIT;
    static char *caps[] = {"zlib",  "process", "pty",     "lossless", "files",
                           "watch", "cancel",  "tunnels", "connect",  "lifecycle",
                           "cgroups"};

    if (g_config.token[0] && !conn_authenticated(c)) {
        if (!token_equal(h->token ? h->token : "", g_config.token)) {
            log_warn("conn %s: authentication failed; closing", conn_peer(c));
            conn_send_error(c, req->id, CODE(UNAUTHENTICATED), 0, "Hello: invalid token");
            conn_close_after_flush(c);
            return;
        }
        conn_set_authenticated(c);
    }
    conn_set_zlib(c, h->accept_zlib);
    if (h->client_name && h->client_name[0])
        log_info("conn %s: hello from '%s' (protocol %u)", conn_peer(c), h->client_name,
                 h->protocol_version);
    hr.protocol_version = PROTOCOL_VERSION;
    hr.agent_version = (char *)SANDBOX_AGENT_VERSION;
    hr.max_frame_size = g_config.max_frame_size;
    /* "cgroups" (the last) only when processes get them. */
    hr.n_capabilities = sizeof caps / sizeof caps[0] - (cg_available() ? 0 : 1);
    hr.capabilities = caps;
    r.result_case = RES(HELLO);
    r.hello = &hr;
    conn_send(c, req->id, 1, &r);
}

void control_ping(conn_t *c, const Request *req)
{
    Response r = RESPONSE_INIT;
    Pong p = SANDBOX__AGENT__V1__PONG__INIT;
    p.payload = req->ping->payload;
    p.agent_time_unix_nano = util_now_unix_nano();
    r.result_case = RES(PONG);
    r.pong = &p;
    /* The payload came in a frame of at most the maximum size; the reply
     * adds a few bytes, which conn_send refuses only at the very limit. */
    if (conn_send_try(c, req->id, 1, &r) == -EMSGSIZE)
        conn_send_error(c, req->id, CODE(INVALID_ARGUMENT), 0,
                        "ping payload of %zu bytes does not fit in a reply frame",
                        req->ping->payload.len);
}

static uint64_t meminfo_field(const char *buf, const char *key)
{
    const char *p = strstr(buf, key);
    if (!p)
        return 0;
    return strtoull(p + strlen(key), NULL, 10) * 1024;
}

static uint64_t self_rss(void)
{
    char buf[256];
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, rss = 0;
    if (!f)
        return 0;
    if (fgets(buf, sizeof buf, f))
        sscanf(buf, "%lu %lu", &size, &rss);
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

void control_info(conn_t *c, const Request *req)
{
    Response r = RESPONSE_INIT;
    Info in = SANDBOX__AGENT__V1__INFO__INIT;
    struct utsname u;
    struct sysinfo si;
    char host[256] = "";
    char membuf[4096] = "";
    FILE *f;

    uname(&u);
    gethostname(host, sizeof host - 1);
    in.agent_version = (char *)SANDBOX_AGENT_VERSION;
    in.protocol_version = PROTOCOL_VERSION;
    in.hostname = host;
    in.kernel_release = u.release;
    in.arch = u.machine;
    in.agent_pid = (uint32_t)getpid();
    in.agent_uptime_nano = util_now_mono_nano() - g_start_mono;
    if (sysinfo(&si) == 0) {
        in.boot_time_unix_nano = util_now_unix_nano() - (uint64_t)si.uptime * 1000000000ull;
        in.load_1 = si.loads[0] / 65536.0;
        in.load_5 = si.loads[1] / 65536.0;
        in.load_15 = si.loads[2] / 65536.0;
        in.memory_total_bytes = (uint64_t)si.totalram * si.mem_unit;
    }
    if ((f = fopen("/proc/meminfo", "re"))) {
        size_t n = fread(membuf, 1, sizeof membuf - 1, f);
        membuf[n] = 0;
        fclose(f);
        in.memory_available_bytes = meminfo_field(membuf, "MemAvailable:");
    }
    in.cpu_count = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    in.open_connections = conn_count();
    in.running_processes = proc_count_running();
    in.kept_processes = proc_count_kept();
    in.kept_output_bytes = proc_kept_output_bytes();
    in.open_tunnels = tunnel_count();
    in.agent_rss_bytes = self_rss();
    lc_fill_info(&in);
    r.result_case = RES(INFO);
    r.info = &in;
    conn_send(c, req->id, 1, &r);
}

void control_cancel(conn_t *c, const Request *req)
{
    uint64_t target = req->cancel->target_id;
    stream_t *s = conn_stream_find(c, target);
    Response r = RESPONSE_INIT;
    Ack ack = SANDBOX__AGENT__V1__ACK__INIT;

    if (!s) {
        conn_send_error(c, req->id, CODE(NOT_FOUND), 0,
                        "cancel: no request with id %llu is in flight on this connection",
                        (unsigned long long)target);
        return;
    }
    if (tunnel_cancel(s)) {
        /* A tunnel ends with its TunnelClosed, sent by tunnel_cancel(). */
        conn_stream_end(c, s);
    } else {
        conn_stream_end(c, s);
        conn_send_error(c, target, CODE(CANCELLED), 0, "request %llu cancelled by the client",
                        (unsigned long long)target);
    }
    r.result_case = RES(ACK);
    r.ack = &ack;
    conn_send(c, req->id, 1, &r);
}
