/* target.h - where a tunnel may go: parsing targets ("tcp:HOST:PORT",
 * "unix:/path") and the operator's --tunnel-allow rules, and matching one
 * against the other. Pure: no I/O, no global state.
 * Errors: functions return 0 or a negative errno, with the reason in err. */
#ifndef SA_TARGET_H
#define SA_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define TARGET_HOST_MAX 254
#define TARGET_PATH_MAX 108 /* sun_path, NUL included */

typedef enum target_kind { TARGET_TCP = 1, TARGET_UNIX = 2 } target_kind_t;

typedef struct target {
    target_kind_t kind;
    char host[TARGET_HOST_MAX]; /* tcp: brackets removed; "localhost" when empty */
    uint16_t port;
    int literal;                /* tcp: host is an address; addr holds it */
    struct sockaddr_storage addr;
    char path[TARGET_PATH_MAX]; /* unix: absolute, or "@name" (abstract) */
} target_t;

/* Parse s. Returns 0, or -EINVAL with the reason in err. */
int target_parse(const char *s, target_t *t, char *err, size_t errlen);

typedef struct target_rule {
    target_kind_t kind;
    char text[160];        /* as given, for messages */
    /* tcp */
    int any_host;          /* "*" */
    int family;            /* AF_INET/AF_INET6 for an address rule, else 0 */
    uint8_t net[16];
    unsigned prefix;       /* bits of net that must match */
    char host[TARGET_HOST_MAX]; /* a name rule: matched against the target's name */
    uint16_t port_lo, port_hi;
    /* unix */
    char glob[TARGET_PATH_MAX];
} target_rule_t;

/* Parse a --tunnel-allow rule: "tcp:HOST:PORTS" where HOST is "*", a name,
 * an address or [IPv6], optionally with /PREFIX, and PORTS is N, N-M or "*";
 * or "unix:GLOB" (fnmatch with FNM_PATHNAME). Returns 0 or -EINVAL. */
int target_rule_parse(const char *s, target_rule_t *r, char *err, size_t errlen);

enum { TARGET_DENY = 0, TARGET_ALLOW = 1, TARGET_CHECK_ADDR = 2 };
/* Before resolution: TARGET_ALLOW when a rule allows t by its name (or a
 * literal address), TARGET_CHECK_ADDR when only address rules could allow
 * it (check each resolved address with target_allows_addr), TARGET_DENY.
 * *rule gets the index of the allowing rule, or -1. No rules: allow. */
int target_allows(const target_rule_t *rules, int n, const target_t *t, int *rule);
/* After resolution: 1 when an address rule allows sa (port included). */
int target_allows_addr(const target_rule_t *rules, int n, const struct sockaddr *sa,
                       int *rule);

/* "127.0.0.1:8080", "[::1]:22" or the unix path, for messages. */
void target_format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

#endif
