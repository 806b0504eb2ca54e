/* target.c - see target.h.
 * Errors: 0 or -EINVAL with a reason, as target.h says. */
#include "target.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

/* A decimal port in [lo, 65535]; no sign, no spaces. */
static int parse_port(const char *s, size_t len, unsigned lo, uint16_t *out)
{
    unsigned v = 0;
    if (!len || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < lo || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* Split "HOST:REST" where HOST may be "[v6]". host gets HOST without the
 * brackets; *rest points after the colon. */
static int split_host(const char *s, char *host, size_t hostlen, const char **rest,
                      int *bracketed)
{
    const char *colon;
    size_t hl;
    *bracketed = 0;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -1;
        hl = (size_t)(end - s - 1);
        s++;
        colon = end + 1;
        *bracketed = 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl))
            return -1; /* an IPv6 address needs brackets */
    }
    if (hl >= hostlen)
        return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    *rest = colon + 1;
    return 0;
}

static int valid_name(const char *h)
{
    if (!*h)
        return 0;
    for (const char *p = h; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
            return 0;
    return 1;
}

int target_parse(const char *s, target_t *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (!s || !*s) {
        snprintf(err, errlen, "missing target (expected tcp:HOST:PORT or unix:/path)");
        return -EINVAL;
    }
    if (!strncmp(s, "unix:", 5)) {
        const char *p = s + 5;
        size_t len = strlen(p);
        t->kind = TARGET_UNIX;
        if (p[0] != '/' && p[0] != '@') {
            snprintf(err, errlen, "target '%s': a unix path must be absolute (or @name)", s);
            return -EINVAL;
        }
        if (len < 2 || len >= sizeof t->path) {
            snprintf(err, errlen, "target '%s': a unix path has 1 to %zu bytes", s,
                     sizeof t->path - 2);
            return -EINVAL;
        }
        memcpy(t->path, p, len + 1);
        return 0;
    }
    if (!strncmp(s, "tcp:", 4)) {
        const char *port;
        int br;
        t->kind = TARGET_TCP;
        if (split_host(s + 4, t->host, sizeof t->host, &port, &br) < 0 ||
            parse_port(port, strlen(port), 1, &t->port) < 0) {
            snprintf(err, errlen,
                     "target '%s': expected tcp:HOST:PORT (HOST a name, an IPv4 address, "
                     "[IPv6] or empty for localhost; PORT 1-65535)",
                     s);
            return -EINVAL;
        }
        if (!t->host[0])
            snprintf(t->host, sizeof t->host, "localhost");
        struct sockaddr_in *a4 = (struct sockaddr_in *)&t->addr;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->addr;
        if (inet_pton(AF_INET6, t->host, &a6->sin6_addr) == 1) {
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons(t->port);
            t->literal = 1;
        } else if (!br && inet_pton(AF_INET, t->host, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons(t->port);
            t->literal = 1;
        } else if (br || !valid_name(t->host)) {
            snprintf(err, errlen, "target '%s': '%s' is not a host name or address", s,
                     t->host);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen, "target '%s': expected tcp:HOST:PORT or unix:/path", s);
    return -EINVAL;
}

int target_rule_parse(const char *s, target_rule_t *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (strlen(s) >= sizeof r->text) {
        snprintf(err, errlen, "rule '%.40s...' is too long", s);
        return -EINVAL;
    }
    snprintf(r->text, sizeof r->text, "%s", s);
    if (!strncmp(s, "unix:", 5)) {
        r->kind = TARGET_UNIX;
        if ((s[5] != '/' && s[5] != '@' && s[5] != '*') || strlen(s + 5) >= sizeof r->glob) {
            snprintf(err, errlen, "rule '%s': expected unix:/PATH-GLOB", s);
            return -EINVAL;
        }
        snprintf(r->glob, sizeof r->glob, "%s", s + 5);
        return 0;
    }
    if (strncmp(s, "tcp:", 4))
        goto bad;
    r->kind = TARGET_TCP;
    char host[TARGET_HOST_MAX + 8];
    const char *ports, *dash;
    int br;
    if (split_host(s + 4, host, sizeof host, &ports, &br) < 0 || !host[0])
        goto bad;
    if (!strcmp(ports, "*")) {
        r->port_lo = 1;
        r->port_hi = 65535;
    } else if ((dash = strchr(ports, '-'))) {
        if (parse_port(ports, (size_t)(dash - ports), 1, &r->port_lo) < 0 ||
            parse_port(dash + 1, strlen(dash + 1), 1, &r->port_hi) < 0 ||
            r->port_hi < r->port_lo)
            goto bad;
    } else if (parse_port(ports, strlen(ports), 1, &r->port_lo) == 0) {
        r->port_hi = r->port_lo;
    } else {
        goto bad;
    }
    if (!strcmp(host, "*") && !br) {
        r->any_host = 1;
        return 0;
    }
    char *slash = strchr(host, '/');
    long prefix = -1;
    if (slash) {
        char *end;
        *slash = 0;
        prefix = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || prefix < 0)
            goto bad;
    }
    if (inet_pton(AF_INET6, host, r->net) == 1) {
        r->family = AF_INET6;
        r->prefix = prefix < 0 ? 128 : (unsigned)prefix;
        if (r->prefix > 128)
            goto bad;
    } else if (!br && inet_pton(AF_INET, host, r->net) == 1) {
        r->family = AF_INET;
        r->prefix = prefix < 0 ? 32 : (unsigned)prefix;
        if (r->prefix > 32)
            goto bad;
    } else if (!br && !slash && valid_name(host) && strlen(host) < sizeof r->host) {
        memcpy(r->host, host, strlen(host) + 1);
    } else {
        goto bad;
    }
    return 0;
bad:
    snprintf(err, errlen,
             "rule '%s': expected tcp:HOST:PORTS (HOST '*', a name, an address or [IPv6], "
             "optionally /PREFIX; PORTS N, N-M or '*') or unix:GLOB",
             s);
    return -EINVAL;
}

/* A unix path a rule may judge by its text: no "." or ".." components and
 * no empty ones, so "/run/app/../../etc/x" cannot pass for a rule on /run/app. */
static int path_normal(const char *p)
{
    if (p[0] == '@')
        return 1;
    for (const char *c = p; *c; c++) {
        if (*c != '/')
            continue;
        if (c[1] == '/' || c[1] == 0)
            return c == p && c[1] == 0;
        if (c[1] == '.' && (c[2] == '/' || c[2] == 0))
            return 0;
        if (c[1] == '.' && c[2] == '.' && (c[3] == '/' || c[3] == 0))
            return 0;
    }
    return 1;
}

int target_allows(const target_rule_t *rules, int n, const target_t *t, int *rule)
{
    int maybe = 0;
    *rule = -1;
    if (n == 0)
        return TARGET_ALLOW;
    for (int i = 0; i < n; i++) {
        const target_rule_t *r = &rules[i];
        if (r->kind != t->kind)
            continue;
        if (t->kind == TARGET_UNIX) {
            if (path_normal(t->path) && fnmatch(r->glob, t->path, FNM_PATHNAME) == 0) {
                *rule = i;
                return TARGET_ALLOW;
            }
            continue;
        }
        if (t->port < r->port_lo || t->port > r->port_hi)
            continue;
        if (r->any_host || (r->host[0] && !t->literal && !strcasecmp(r->host, t->host))) {
            *rule = i;
            return TARGET_ALLOW;
        }
        if (r->family)
            maybe = 1;
    }
    if (maybe && t->literal)
        return target_allows_addr(rules, n, (const struct sockaddr *)&t->addr, rule)
                   ? TARGET_ALLOW
                   : TARGET_DENY;
    return maybe ? TARGET_CHECK_ADDR : TARGET_DENY;
}

static int prefix_match(const uint8_t *a, const uint8_t *net, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, net, full))
        return 0;
    if (!rest)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

int target_allows_addr(const target_rule_t *rules, int n, const struct sockaddr *sa, int *rule)
{
    const uint8_t *a;
    uint8_t v4[4];
    int fam = sa->sa_family;
    unsigned port;

    *rule = -1;
    if (fam == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        a = (const uint8_t *)&s4->sin_addr;
        port = ntohs(s4->sin_port);
    } else if (fam == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        a = s6->sin6_addr.s6_addr;
        port = ntohs(s6->sin6_port);
        /* ::ffff:a.b.c.d is judged as a.b.c.d by IPv4 rules. */
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            memcpy(v4, a + 12, 4);
            a = v4;
            fam = AF_INET;
        }
    } else {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        const target_rule_t *r = &rules[i];
        if (r->kind != TARGET_TCP || port < r->port_lo || port > r->port_hi)
            continue;
        if (r->any_host || (r->family == fam && prefix_match(a, r->net, r->prefix))) {
            *rule = i;
            return 1;
        }
    }
    return 0;
}

void target_format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        snprintf(buf, buflen, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        snprintf(buf, buflen, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *su = (const struct sockaddr_un *)sa;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? (size_t)len - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        if (n && su->sun_path[0] == 0)
            snprintf(buf, buflen, "@%.*s", (int)(n - 1), su->sun_path + 1);
        else if (n)
            snprintf(buf, buflen, "%.*s", (int)strnlen(su->sun_path, n), su->sun_path);
        else
            snprintf(buf, buflen, "(unnamed)");
    } else {
        snprintf(buf, buflen, "(family %d)", sa->sa_family);
    }
}
