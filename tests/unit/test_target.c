/* Unit tests of tunnel targets and --tunnel-allow rules (agent/target.c):
 * parsing both, and which rule allows what, before and after resolution. */
#include "harness.h"
#include "target.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static target_t parse_ok(const char *s)
{
    target_t t;
    char err[300];
    if (target_parse(s, &t, err, sizeof err) < 0)
        FAIL("'%s': %s", s, err);
    return t;
}

TEST(targets_parse)
{
    target_t t = parse_ok("tcp:example.com:80");
    ASSERT_EQ(t.kind, TARGET_TCP);
    ASSERT_STR_EQ(t.host, "example.com");
    ASSERT_EQ(t.port, 80);
    ASSERT(!t.literal);
    t = parse_ok("tcp::8080");
    ASSERT_STR_EQ(t.host, "localhost");
    ASSERT_EQ(t.port, 8080);
    t = parse_ok("tcp:10.1.2.3:65535");
    ASSERT(t.literal);
    ASSERT_EQ(t.addr.ss_family, AF_INET);
    t = parse_ok("tcp:[::1]:22");
    ASSERT(t.literal);
    ASSERT_EQ(t.addr.ss_family, AF_INET6);
    ASSERT_STR_EQ(t.host, "::1");
    t = parse_ok("unix:/run/app.sock");
    ASSERT_EQ(t.kind, TARGET_UNIX);
    ASSERT_STR_EQ(t.path, "/run/app.sock");
    t = parse_ok("unix:@abstract");
    ASSERT_STR_EQ(t.path, "@abstract");

    const char *bad[] = {NULL, "", "tcp", "tcp:", "tcp:x", "tcp:x:", "tcp:x:0", "tcp:x:65536",
                         "tcp:x:-1", "tcp:x:+1", "tcp:::1:22", "tcp:[::1]22", "tcp:[::1:22",
                         "tcp:[nothost]:1", "tcp:a b:1", "unix:", "unix:rel/x", "unix:/",
                         "http://x", "tcp:x:123456"};
    for (size_t i = 0; i < SA_ARRAY_LEN(bad); i++) {
        target_t x;
        char err[300] = "";
        if (target_parse(bad[i], &x, err, sizeof err) != -EINVAL)
            FAIL("'%s' parsed", bad[i] ? bad[i] : "(null)");
        ASSERT(err[0]);
    }
    char longpath[200];
    memset(longpath, 'a', sizeof longpath);
    memcpy(longpath, "unix:/", 6);
    longpath[sizeof longpath - 1] = 0;
    target_t x;
    char err[300];
    ASSERT_EQ(target_parse(longpath, &x, err, sizeof err), -EINVAL);
}

static int allows(const char *const *rules, int n, const char *target)
{
    target_rule_t r[8];
    char err[300];
    int rule;
    for (int i = 0; i < n; i++)
        if (target_rule_parse(rules[i], &r[i], err, sizeof err) < 0)
            FAIL("rule '%s': %s", rules[i], err);
    target_t t = parse_ok(target);
    return target_allows(r, n, &t, &rule);
}

TEST(rules_parse)
{
    const char *good[] = {"tcp:127.0.0.1:1-65535", "tcp:*:*", "tcp:db.internal:5432",
                          "tcp:10.0.0.0/8:443", "tcp:[::1]:22", "tcp:[fd00::/8]:80",
                          "unix:/run/app/*", "unix:*"};
    const char *bad[] = {"", "tcp:", "tcp:*", "tcp:*:0", "tcp:*:2-1", "tcp:1.2.3.4/33:1",
                         "tcp:[::1]/129:1", "tcp:x/8:1", "tcp:*:1-", "udp:*:1", "unix:rel",
                         "tcp::80"};
    target_rule_t r;
    char err[300];
    for (size_t i = 0; i < SA_ARRAY_LEN(good); i++)
        if (target_rule_parse(good[i], &r, err, sizeof err) < 0)
            FAIL("rule '%s': %s", good[i], err);
    for (size_t i = 0; i < SA_ARRAY_LEN(bad); i++)
        if (target_rule_parse(bad[i], &r, err, sizeof err) == 0)
            FAIL("rule '%s' parsed", bad[i]);
}

TEST(rules_match)
{
    const char *none[] = {NULL};
    ASSERT_EQ(allows(none, 0, "tcp:anything:1"), TARGET_ALLOW);

    const char *r1[] = {"tcp:127.0.0.1:1-1000", "unix:/run/app/*", "tcp:db.internal:5432"};
    ASSERT_EQ(allows(r1, 3, "tcp:127.0.0.1:80"), TARGET_ALLOW);
    ASSERT_EQ(allows(r1, 3, "tcp:127.0.0.1:1001"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "tcp:127.0.0.2:80"), TARGET_DENY);
    /* A name: only its addresses can tell. */
    ASSERT_EQ(allows(r1, 3, "tcp:localhost:80"), TARGET_CHECK_ADDR);
    ASSERT_EQ(allows(r1, 3, "tcp:localhost:2000"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "tcp:DB.internal:5432"), TARGET_ALLOW);
    ASSERT_EQ(allows(r1, 3, "tcp:db.internal:5433"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "unix:/run/app/x.sock"), TARGET_ALLOW);
    ASSERT_EQ(allows(r1, 3, "unix:/run/app/sub/x.sock"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "unix:/run/app/../../etc/x"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "unix:/run/app/./x"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "unix:/run/app//x"), TARGET_DENY);
    ASSERT_EQ(allows(r1, 3, "unix:/run/other"), TARGET_DENY);

    const char *r2[] = {"tcp:10.0.0.0/8:443", "tcp:[fd00::/8]:*"};
    ASSERT_EQ(allows(r2, 2, "tcp:10.200.3.4:443"), TARGET_ALLOW);
    ASSERT_EQ(allows(r2, 2, "tcp:11.0.0.1:443"), TARGET_DENY);
    ASSERT_EQ(allows(r2, 2, "tcp:[fdab::1]:9"), TARGET_ALLOW);
    ASSERT_EQ(allows(r2, 2, "tcp:[fe80::1]:9"), TARGET_DENY);
    /* ::ffff:10.1.1.1 is 10.1.1.1. */
    ASSERT_EQ(allows(r2, 2, "tcp:[::ffff:10.1.1.1]:443"), TARGET_ALLOW);

    const char *r3[] = {"tcp:*:8080"};
    ASSERT_EQ(allows(r3, 1, "tcp:anything:8080"), TARGET_ALLOW);
    ASSERT_EQ(allows(r3, 1, "tcp:anything:8081"), TARGET_DENY);
    ASSERT_EQ(allows(r3, 1, "unix:/x"), TARGET_DENY);

    /* After resolution. */
    target_rule_t rr[2];
    char err[300];
    int rule;
    ASSERT_EQ(target_rule_parse("tcp:127.0.0.0/8:80", &rr[0], err, sizeof err), 0);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "127.9.9.9", &a4.sin_addr);
    ASSERT_EQ(target_allows_addr(rr, 1, (struct sockaddr *)&a4, &rule), 1);
    ASSERT_EQ(rule, 0);
    a4.sin_port = htons(81);
    ASSERT_EQ(target_allows_addr(rr, 1, (struct sockaddr *)&a4, &rule), 0);
}

TEST(format_addresses)
{
    char buf[128];
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    inet_pton(AF_INET6, "::1", &a6.sin6_addr);
    target_format_addr((struct sockaddr *)&a6, sizeof a6, buf, sizeof buf);
    ASSERT_STR_EQ(buf, "[::1]:443");
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(8080)};
    inet_pton(AF_INET, "10.0.0.1", &a4.sin_addr);
    target_format_addr((struct sockaddr *)&a4, sizeof a4, buf, sizeof buf);
    ASSERT_STR_EQ(buf, "10.0.0.1:8080");
}

TEST_MAIN(TEST_ENTRY(targets_parse), TEST_ENTRY(rules_parse), TEST_ENTRY(rules_match),
          TEST_ENTRY(format_addresses))
