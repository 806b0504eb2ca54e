/* The services.d format and the probe specs: what each key becomes in the
 * StartProcess, quoting, defaults, and errors that name the line. */
#include "harness.h"
#include "svcfile.h"

typedef Sandbox__Agent__V1__StartProcess StartProcess;
typedef Sandbox__Agent__V1__Probe Probe;

static StartProcess *parse_ok(const char *text, const char *name)
{
    char err[512];
    StartProcess *sp = NULL;
    if (svcfile_parse(text, strlen(text), name, &sp, err, sizeof err) < 0)
        FAIL("parse: %s", err);
    return sp;
}

static void parse_err(const char *text, const char *want)
{
    char err[512];
    StartProcess *sp = NULL;
    if (svcfile_parse(text, strlen(text), "/etc/s/x.conf", &sp, err, sizeof err) == 0)
        FAIL("parsed, expected '%s'", want);
    if (!strstr(err, want))
        FAIL("error '%s' lacks '%s'", err, want);
    ASSERT(sp == NULL);
}

TEST(exec_words_quotes_and_defaults)
{
    StartProcess *sp = parse_ok("  # comment\n"
                                "\n"
                                "exec = sh -c 'echo \"a b\"; exit 3'  x\\ y \"q\\\"t\"\r\n"
                                "env = A=1=2\n"
                                "env=B=\n",
                                "/etc/sandbox-agent/services.d/web.conf");
    ASSERT_STR_EQ(sp->command, "sh");
    ASSERT_EQ(sp->n_args, 4);
    ASSERT_STR_EQ(sp->args[0], "-c");
    ASSERT_STR_EQ(sp->args[1], "echo \"a b\"; exit 3");
    ASSERT_STR_EQ(sp->args[2], "x y");
    ASSERT_STR_EQ(sp->args[3], "q\"t");
    ASSERT_EQ(sp->n_env, 2);
    ASSERT_STR_EQ(sp->env[0]->key, "A");
    ASSERT_STR_EQ(sp->env[0]->value, "1=2");
    ASSERT_STR_EQ(sp->env[1]->value, "");
    /* The tag comes from the file's name; the policy is on-failure. */
    ASSERT_STR_EQ(sp->tag, "web");
    ASSERT(sp->restart);
    ASSERT_EQ(sp->restart->mode, SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ON_FAILURE);
    sandbox__agent__v1__start_process__free_unpacked(sp, NULL);
}

TEST(every_key)
{
    StartProcess *sp = parse_ok("command = /usr/bin/python3\n"
                                "arg = -m\n"
                                "arg =  http.server  \n"
                                "tag = db\n"
                                "cwd = /srv\n"
                                "user = www-data\n"
                                "restart = always\n"
                                "max_restarts = 5\n"
                                "backoff_initial_ms = 50\n"
                                "backoff_max_ms = 8000\n"
                                "reset_after_ms = 60000\n"
                                "kill_grace_ms = 250\n"
                                "output_window = 1048576\n"
                                "ready_interval_ms = 20\n"
                                "ready = http:[::1]:8080/health?x=1\n"
                                "ready_timeout_ms = 300\n"
                                "ready_initial_delay_ms = 7\n"
                                "health = exec:test -e '/run/my file'\n"
                                "health_interval_ms = 900\n"
                                "health_timeout_ms = 400\n"
                                "health_initial_delay_ms = 9\n"
                                "health_failure_threshold = 4\n",
                                "x.conf");
    ASSERT_STR_EQ(sp->command, "/usr/bin/python3");
    ASSERT_EQ(sp->n_args, 2);
    ASSERT_STR_EQ(sp->args[1], "http.server");
    ASSERT_STR_EQ(sp->tag, "db");
    ASSERT_STR_EQ(sp->cwd, "/srv");
    ASSERT_STR_EQ(sp->user, "www-data");
    ASSERT_EQ(sp->restart->mode, SANDBOX__AGENT__V1__RESTART_POLICY__MODE__ALWAYS);
    ASSERT_EQ(sp->restart->max_restarts, 5);
    ASSERT_EQ(sp->restart->backoff_initial_ms, 50);
    ASSERT_EQ(sp->restart->backoff_max_ms, 8000);
    ASSERT_EQ(sp->restart->reset_after_ms, 60000);
    ASSERT_EQ(sp->kill_grace_ms, 250);
    ASSERT_EQ(sp->output_window, 1048576);
    ASSERT_EQ(sp->ready->check_case, SANDBOX__AGENT__V1__PROBE__CHECK_HTTP);
    ASSERT_STR_EQ(sp->ready->http->host, "[::1]");
    ASSERT_EQ(sp->ready->http->port, 8080);
    ASSERT_STR_EQ(sp->ready->http->path, "/health?x=1");
    /* Settings given before the probe itself are kept. */
    ASSERT_EQ(sp->ready->interval_ms, 20);
    ASSERT_EQ(sp->ready->timeout_ms, 300);
    ASSERT_EQ(sp->ready->initial_delay_ms, 7);
    ASSERT_EQ(sp->health->check_case, SANDBOX__AGENT__V1__PROBE__CHECK_EXEC);
    ASSERT_STR_EQ(sp->health->exec->command, "test");
    ASSERT_EQ(sp->health->exec->n_args, 2);
    ASSERT_STR_EQ(sp->health->exec->args[1], "/run/my file");
    ASSERT_EQ(sp->health->interval_ms, 900);
    ASSERT_EQ(sp->health->failure_threshold, 4);
    sandbox__agent__v1__start_process__free_unpacked(sp, NULL);
}

TEST(probe_specs)
{
    char err[300];
    Probe *p = svcfile_parse_probe("tcp:8080", err, sizeof err);
    ASSERT(p && p->check_case == SANDBOX__AGENT__V1__PROBE__CHECK_TCP);
    ASSERT_EQ(p->tcp->port, 8080);
    ASSERT_STR_EQ(p->tcp->host, "");
    sandbox__agent__v1__probe__free_unpacked(p, NULL);
    p = svcfile_parse_probe("tcp:10.0.0.2:5432", err, sizeof err);
    ASSERT(p);
    ASSERT_STR_EQ(p->tcp->host, "10.0.0.2");
    ASSERT_EQ(p->tcp->port, 5432);
    sandbox__agent__v1__probe__free_unpacked(p, NULL);
    p = svcfile_parse_probe("http://127.0.0.1:80", err, sizeof err);
    ASSERT(p && p->http->port == 80);
    ASSERT_STR_EQ(p->http->path, "");
    sandbox__agent__v1__probe__free_unpacked(p, NULL);
    p = svcfile_parse_probe("line:Listening on", err, sizeof err);
    ASSERT(p && p->check_case == SANDBOX__AGENT__V1__PROBE__CHECK_OUTPUT);
    ASSERT_STR_EQ(p->output->line_prefix, "Listening on");
    ASSERT_STR_EQ(p->output->contains, "");
    sandbox__agent__v1__probe__free_unpacked(p, NULL);
    p = svcfile_parse_probe("output:ready: yes", err, sizeof err);
    ASSERT(p);
    ASSERT_STR_EQ(p->output->contains, "ready: yes");
    sandbox__agent__v1__probe__free_unpacked(p, NULL);
    const char *bad[] = {"tcp:", "tcp:0", "tcp:70000", "tcp:x", "http:", "http:/x", "exec:",
                         "exec:'open", "output:", "line:", "udp:53", "", "tcp:1:2:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if ((p = svcfile_parse_probe(bad[i], err, sizeof err)))
            FAIL("'%s' parsed", bad[i]);
        ASSERT(err[0]);
    }
}

TEST(errors_name_the_file_and_line)
{
    parse_err("exec = sleep 1\n\ncomand = x\n", "/etc/s/x.conf:3: unknown key 'comand'");
    parse_err("exec = a\nexec = b\n", "x.conf:2: 'exec' is given twice");
    parse_err("exec = a\nnot a pair\n", "x.conf:2: expected key = value");
    parse_err("exec = a\nKey = v\n", "x.conf:2: 'Key' is not a key");
    parse_err("exec = a\n = v\n", "x.conf:2: a key is missing");
    parse_err("exec = 'unterminated\n", "x.conf:1: exec: unterminated ' quote");
    parse_err("exec = a\nrestart = sometimes\n", "x.conf:2: restart 'sometimes'");
    parse_err("exec = a\nmax_restarts = -1\n", "x.conf:2: max_restarts '-1' is not a number");
    parse_err("exec = a\nmax_restarts = 4294967296\n", "is not a number");
    parse_err("exec = a\nready = ftp:21\n", "x.conf:2: probe 'ftp:21'");
    parse_err("exec = a\nenv = NOEQUALS\n", "x.conf:2: env: expected KEY=VALUE");
    parse_err("exec = a\ncommand = b\n", "x.conf:2: give exec or command and arg, not both");
    parse_err("tag = x\n", "x.conf: no exec");
    parse_err("exec = a\nready_interval_ms = 5\n", "x.conf: probe settings without the probe");
    parse_err("exec = a\nready_failure_threshold = 5\n", "unknown key 'ready_failure_threshold'");
    char big[SVCFILE_MAX_SIZE + 2];
    memset(big, '#', sizeof big - 1);
    big[sizeof big - 1] = 0;
    parse_err(big, "larger than");
    char longline[5000];
    memset(longline, 'a', sizeof longline - 1);
    longline[sizeof longline - 1] = 0;
    parse_err(longline, "x.conf:1: line longer than");
    char err[300];
    StartProcess *sp = NULL;
    ASSERT_EQ(svcfile_parse("exec = a\n\0b\n", 12, "x.conf", &sp, err, sizeof err), -1);
    ASSERT(strstr(err, "x.conf: contains a NUL byte"));
    /* A tag from a name that leaves nothing. */
    ASSERT_EQ(svcfile_parse("exec = a\n", 9, "/d/", &sp, err, sizeof err), -1);
    ASSERT(strstr(err, "no tag"));
}

TEST_MAIN(TEST_ENTRY(exec_words_quotes_and_defaults), TEST_ENTRY(every_key),
          TEST_ENTRY(probe_specs), TEST_ENTRY(errors_name_the_file_and_line))
