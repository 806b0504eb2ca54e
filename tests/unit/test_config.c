/* Unit tests of option parsing (agent/config.c): the table drives parsing,
 * ranges and --help, so each kind of option is tried once, with its
 * boundaries and its mistakes. */
#include "config.h"
#include "harness.h"

#include <fcntl.h>
#include <unistd.h>

static int parse(config_t *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"sandbox-agent";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    /* Silence the usage text of the error cases. */
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    int rc = config_parse(cfg, argc, argv);
    dup2(saved, 2);
    close(saved);
    close(null);
    return rc;
}

TEST(defaults)
{
    config_t c;
    const char *a[] = {NULL};
    unsetenv("SANDBOX_AGENT_TOKEN");
    ASSERT_EQ(parse(&c, a), 0);
    ASSERT_EQ(c.max_connections, 1024);
    ASSERT_EQ(c.max_frame_size, 4u << 20);
    ASSERT_EQ(c.ready_fd, -1);
    ASSERT_EQ(c.socket_mode, 0600);
    ASSERT_EQ(c.n_listen, 1); /* the default socket */
    ASSERT(!strncmp(c.listen[0], "unix:", 5));
    /* --max-queued-bytes is kept as given (messages are cut to fit it),
     * and the Hello deadline is on by default. */
    ASSERT_EQ(c.conn_queue_high, 1u << 20);
    ASSERT_EQ(c.hello_timeout_s, 10);
    const char *q[] = {"--max-queued-bytes", "65536", "--hello-timeout", "0", NULL};
    ASSERT_EQ(parse(&c, q), 0);
    ASSERT_EQ(c.conn_queue_high, 65536);
    ASSERT_EQ(c.hello_timeout_s, 0);
}

TEST(numbers_and_their_ranges)
{
    config_t c;
    const char *ok[] = {"--max-connections", "7", "--output-window=8192", "--ready-fd", "0",
                        "--max-kept-output", "0x100000", NULL};
    ASSERT_EQ(parse(&c, ok), 0);
    ASSERT_EQ(c.max_connections, 7);
    ASSERT_EQ(c.default_output_window, 8192);
    ASSERT_EQ(c.ready_fd, 0);
    ASSERT_EQ(c.max_kept_output, 1u << 20);
    const char *zero[] = {"--max-connections", "0", NULL};
    ASSERT_EQ(parse(&c, zero), -1);
    const char *neg[] = {"--max-processes", "-1", NULL};
    ASSERT_EQ(parse(&c, neg), -1);
    const char *junk[] = {"--kill-grace-ms", "5s", NULL};
    ASSERT_EQ(parse(&c, junk), -1);
    const char *big[] = {"--max-frame-size", "4294967296", NULL};
    ASSERT_EQ(parse(&c, big), -1);
    const char *small[] = {"--max-frame-size", "1024", NULL};
    ASSERT_EQ(parse(&c, small), -1);
}

TEST(signed_values_remember_they_were_given)
{
    config_t c;
    const char *a[] = {"--nice", "-5", "--oom-score-adj", "0", NULL};
    ASSERT_EQ(parse(&c, a), 0);
    ASSERT_EQ(c.nice, -5);
    ASSERT_EQ(c.nice_set, 1);
    ASSERT_EQ(c.oom_score_adj, 0);
    ASSERT_EQ(c.oom_score_adj_set, 1);
    const char *b[] = {"--nice", "20", NULL};
    ASSERT_EQ(parse(&c, b), -1);
    const char *d[] = {NULL};
    ASSERT_EQ(parse(&c, d), 0);
    ASSERT_EQ(c.nice_set, 0);
}

TEST(listen_addresses)
{
    config_t c;
    const char *a[] = {"--listen", "vsock", "--listen", "tcp:127.0.0.1:7000", "--insecure",
                       NULL};
    ASSERT_EQ(parse(&c, a), 0);
    ASSERT_EQ(c.n_listen, 2);
    ASSERT_STR_EQ(c.listen[0], "vsock:1024");
    ASSERT_STR_EQ(c.listen[1], "tcp:127.0.0.1:7000");
    ASSERT_EQ(c.insecure, 1);
    const char *bad[] = {"--listen", "http://x", NULL};
    ASSERT_EQ(parse(&c, bad), -1);
}

TEST(modes_levels_formats)
{
    config_t c;
    const char *a[] = {"--socket-mode", "660", "--log-format", "json", "--log-level", "debug",
                       NULL};
    ASSERT_EQ(parse(&c, a), 0);
    ASSERT_EQ(c.socket_mode, 0660);
    ASSERT_EQ(c.log_json, 1);
    const char *m[] = {"--socket-mode", "999", NULL};
    ASSERT_EQ(parse(&c, m), -1);
    const char *l[] = {"--log-level", "loud", NULL};
    ASSERT_EQ(parse(&c, l), -1);
    const char *g[] = {"--socket-group", "", NULL};
    ASSERT_EQ(parse(&c, g), -1);
}

TEST(mistakes)
{
    config_t c;
    const char *u[] = {"--no-such-flag", NULL};
    ASSERT_EQ(parse(&c, u), -1);
    const char *v[] = {"--listen", NULL};
    ASSERT_EQ(parse(&c, v), -1);
    const char *w[] = {"stray", NULL};
    ASSERT_EQ(parse(&c, w), -1);
}

TEST(token_from_file_and_environment)
{
    config_t c;
    char path[] = "/tmp/sa-unit-token-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "s3cret\n", 7), 7);
    close(fd);
    const char *a[] = {"--token-file", path, NULL};
    ASSERT_EQ(parse(&c, a), 0);
    ASSERT_STR_EQ(c.token, "s3cret");
    unlink(path);
    const char *missing[] = {"--token-file", path, NULL};
    ASSERT_EQ(parse(&c, missing), -1);
    setenv("SANDBOX_AGENT_TOKEN", "from-env", 1);
    const char *none[] = {NULL};
    ASSERT_EQ(parse(&c, none), 0);
    ASSERT_STR_EQ(c.token, "from-env");
    /* Scrubbed: children never see it. */
    ASSERT(getenv("SANDBOX_AGENT_TOKEN") == NULL);
}

TEST_MAIN(TEST_ENTRY(defaults), TEST_ENTRY(numbers_and_their_ranges),
          TEST_ENTRY(signed_values_remember_they_were_given), TEST_ENTRY(listen_addresses),
          TEST_ENTRY(modes_levels_formats), TEST_ENTRY(mistakes),
          TEST_ENTRY(token_from_file_and_environment))
