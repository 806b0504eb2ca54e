/* bench.h - what the benchmark's parts share: clocks and statistics, the
 * agent under test (start, stop, RSS), a light response reader for bulk
 * streams, the qemu-guest-agent client, and the table of results.
 *
 * Every figure is measured for sandbox-agent and for its references in the
 * same run and reported as a ratio, because absolute times on a shared
 * machine move from run to run.
 */
#ifndef SA_BENCH_H
#define SA_BENCH_H

#include "client.h"
#include "pb.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------ options */

typedef struct bench_opts {
    const char *agent_bin;
    const char *static_agent_bin; /* optional: a -DSANDBOX_AGENT_STATIC=ON build */
    const char *qga_bin;   /* NULL: qemu-ga not installed; its rows are skipped */
    const char *socat_bin; /* NULL: socat not installed */
    const char *json_out;
    const char *only;      /* comma-separated figure numbers, NULL = all */
    uint64_t stream_bytes; /* figures 3, 4, 5 (default 1 GiB) */
    uint64_t qga_bytes;    /* qemu-ga capture and file sizes */
    int exec_runs;
    int parallel_threads;
    double parallel_secs;
    int startup_runs;
    int repeats; /* runs of each bulk transfer; the median is kept */
    char dir[128]; /* scratch directory for sockets */
    char shm[128]; /* scratch directory on tmpfs for files */
} bench_opts_t;

extern bench_opts_t g_opt;

/* ------------------------------------------------------------ time, stats */

uint64_t now_ns(void);
void sleep_us(unsigned us);
/* Sorts v in place; q in [0, 1]. */
double quantile(double *v, size_t n, double q);
double median3(double *v, size_t n);

struct sockaddr_un;
/* Fill a unix socket address; -1 when path does not fit. */
int sun_set(struct sockaddr_un *sa, const char *path);

/* ------------------------------------------------------------ results */

enum better { LOWER = 0, HIGHER = 1 };

/* One row of the table: a measurement of sandbox-agent next to one
 * reference. ratio = agent / reference. target: a bound on the ratio
 * (target_ratio) or on the value itself (target_abs), NAN when none. */
typedef struct row {
    char fig[4];
    char what[64];
    char unit[12];
    double agent;
    char ref[32];
    double refv;
    enum better better;
    double target_ratio;
    double target_abs;
    char note[256];
} row_t;

void result_add(const char *fig, const char *what, const char *unit, double agent,
                const char *ref, double refv, enum better better, double target_ratio,
                double target_abs, const char *note);
/* Free-form facts for the JSON (machine, sizes). */
void result_fact(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void results_print_table(void);
int results_write_json(const char *path);

/* ------------------------------------------------------------ the agent */

typedef struct agent {
    pid_t pid;
    char sock[200];
    char addr[210];
    char log[200];
} agent_t;

/* Start sandbox-agent on a fresh socket with extra arguments (NULL-ended);
 * returns 0 once it is ready, -1 after printing why. */
int agent_up(agent_t *a, const char *name, const char *const *extra);
void agent_down(agent_t *a);
/* VmRSS of pid in KiB, -1 when unknown. */
long rss_kib(pid_t pid);
/* The main thread's time on a CPU and waiting for one (runqueue), in ns,
 * from /proc/PID/schedstat; -1 when unknown. */
int sched_ns(pid_t pid, uint64_t *run, uint64_t *wait);
/* Connected and greeted; exits the benchmark on failure (nothing to
 * measure without it). */
sa_client_t *agent_client(const agent_t *a);
/* One exec round trip: StartProcess{follow} of /bin/true until its
 * ProcessExit, in ns; exits the benchmark on failure. */
double agent_exec_once(sa_client_t *c);
/* Ping round trip in ns, or -1. */
int64_t agent_ping(sa_client_t *c);

/* ------------------------------------------------------------ light reader */

/* Reads response frames straight off the socket and scans only the fields a
 * benchmark needs, without unpacking (no copy of the data): so the client
 * costs about what socat's reader costs, and the agent is what is measured. */
typedef struct lresp {
    uint64_t id;
    int done;
    int result;          /* Response.result field number (RES values) */
    uint64_t data_len;   /* OutputEvent.data or FileChunk.data */
    uint64_t num;        /* ProcessStarted.pid, ProcessExit.exit_code, WriteFileResult.bytes_written,
                            FileEnd.size, TunnelData.credit */
    int eof;             /* TunnelData.eof */
    char msg[200];       /* Error.message */
    int code;            /* Error.code */
} lresp_t;

typedef struct lreader {
    int fd;
    uint8_t *buf;
    size_t cap, off, len;
} lreader_t;

int lreader_init(lreader_t *r, int fd, size_t max_frame);
void lreader_free(lreader_t *r);
/* Next response: 0, or -errno (-EPIPE at EOF, -EBADMSG). */
int lreader_next(lreader_t *r, lresp_t *out);
/* Read until a done response for id; adds every OutputEvent/FileChunk data
 * length to *bytes. Returns 0 with the last response in *last, or -errno. */
int lreader_until_done(lreader_t *r, uint64_t id, uint64_t *bytes, lresp_t *last);

/* ------------------------------------------------------------ qemu-guest-agent */

typedef struct qga {
    pid_t pid;
    int fd;
    char sock[200];
    char *buf; /* the last reply */
    size_t cap, len;
} qga_t;

int qga_up(qga_t *q);
void qga_down(qga_t *q);
/* Send one command (a JSON object) and read its one-line reply into q->buf.
 * Returns 0, or -1 when the reply is an error or the link broke. */
int qga_cmd(qga_t *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The number after "key": in the last reply, -1 when missing. */
long long qga_num(const qga_t *q, const char *key);
/* 1 when "key": true in the last reply. */
int qga_true(const qga_t *q, const char *key);
/* Bytes of the base64 string after "key": (decoded into dst when not
 * NULL); -1 when missing. */
long long qga_b64(const qga_t *q, const char *key, uint8_t *dst);
/* guest-exec of argv with captured output until it exited; returns the
 * captured stdout bytes, or -1. */
long long qga_exec(qga_t *q, const char *path, const char *const *args, int capture);

/* ------------------------------------------------------------ figures */

void fig_exec(void);
void fig_parallel(void);
void fig_stream(void);
void fig_fanout(void);
void fig_files(void);
void fig_memory(void);
void fig_startup(void);
/* Figure 9: exec round trip and Ping p99 as kept processes and following
 * connections grow (scale.c). */
void fig_scale(void);
/* Figure 10: tunnels, multiplexed and dedicated, against socat relaying TCP
 * to TCP and a direct loopback connect (tunnel.c). */
void fig_tunnel(void);

/* Figure 8: a Ping client on its own connection that runs while other
 * figures load the agent. */
void pinger_start(const agent_t *a, const char *phase);
void pinger_stop(void);
/* Idle Ping round trips for a second: the reference of figure 8. */
void pinger_idle(void);
/* Report the p99 of each phase (call after the load figures). */
void pinger_report(void);

/* The agent the load figures share (one instance, started by main), and
 * the qemu-guest-agent reference (g_have_qga when it runs). */
extern agent_t g_agent;
extern qga_t g_qga;
extern int g_have_qga;
extern long g_qga_idle_kib, g_qga_capture_kib;

#endif
