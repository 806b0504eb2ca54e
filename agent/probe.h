/* probe.h - checks that say whether a service is ready or healthy: a TCP
 * connect, an HTTP request, a command's exit status, or text in the
 * process's output. Each runs on the loop without blocking it: connects and
 * HTTP exchanges are non-blocking sockets with a timeout, a command is an
 * ordinary child reaped by the loop, output is matched as it is read.
 * Errors: probe_check returns a negative errno with a message; probe_new
 * NULL only for want of memory; a probe's failures are its results. */
#ifndef SA_PROBE_H
#define SA_PROBE_H

#include "pb.h"
#include "user.h"

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

typedef Sandbox__Agent__V1__Probe Probe;
typedef struct probe probe_t;

/* One attempt's result: ok, or err saying what failed. */
typedef void probe_result_fn(void *arg, int ok, const char *err);

/* Who an exec probe runs as and where: the service's user, cwd and env. */
typedef struct probe_env {
    const user_id_t *user; /* NULL: the agent's own */
    int set_user;
    const char *cwd;
    char *const *env;      /* "KEY=VALUE", NULL-terminated; may be NULL */
} probe_env_t;

/* Check a probe's settings. ready: a ready probe (an output probe is only
 * allowed there). 0, or -EINVAL with err saying what is wrong. */
int probe_check(const Probe *cfg, int ready, char *err, size_t n);
/* A probe with cfg's settings (copied). NULL on ENOMEM. */
probe_t *probe_new(struct ev_loop *loop, const Probe *cfg, int ready, const probe_env_t *env,
                   probe_result_fn *cb, void *arg);
/* Attempts start (after initial_delay_ms) and repeat every interval_ms
 * until probe_stop(); each calls cb. An output probe instead watches what
 * probe_output() is given, from now on, and calls cb once it matches. */
void probe_start(probe_t *pr);
/* No further attempts; one in flight is abandoned (its child killed). */
void probe_stop(probe_t *pr);
void probe_free(probe_t *pr);
/* Output the process wrote (for an output probe; ignored by others). */
void probe_output(probe_t *pr, const uint8_t *data, size_t len);
/* "tcp 127.0.0.1:8080" and the like, for messages. */
const char *probe_describe(const probe_t *pr);

#endif
