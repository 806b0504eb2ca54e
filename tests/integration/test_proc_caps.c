/* The total cap on kept output (--max-kept-output) holds for running
 * processes too, and cancelling or duplicating a stream behaves as the
 * protocol says. */
#include "proc_helpers.h"

#include <sched.h>

static agent_t A;

TEST(running_processes_share_the_total_cap)
{
    agent_t a;
    /* 1 MiB for everyone; each process would keep 4 MiB by default. */
    agent_start(&a, "--max-kept-output", "1048576", NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = start_sh(c, "head -c 3000000 /dev/zero; exec sleep 30", NULL, NULL);
    /* Wait until all output is read (3 MB each), then look at the log. */
    for (int tries = 0; tries < 500; tries++) {
        uint64_t total = 0;
        for (int i = 0; i < 4; i++) {
            Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
            gp.pid = pids[i];
            Response *r = simple(c, OP(GET_PROCESS), &gp);
            ASSERT_RESULT(r, PROCESS);
            total += r->process->next_sequence;
            sa_response_free(r);
        }
        if (total == 4ull * 3000000)
            break;
        usleep(20000);
    }
    Response *r = info_call(c);
    /* The cap, plus at most the trim floor (64 KiB) per running process. */
    ASSERT_LE(r->info->kept_output_bytes, (1u << 20) + 4 * 64 * 1024 + 65536);
    sa_response_free(r);
    /* The oldest output went, and a follower resuming from the start is
     * told exactly what it missed. */
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.pid = pids[0];
    r = simple(c, OP(GET_PROCESS), &gp);
    ASSERT_RESULT(r, PROCESS);
    uint64_t oldest = r->process->oldest_sequence;
    ASSERT_GT(oldest, 1);
    sa_response_free(r);
    uint64_t id = follow_send(c, pids[0], 1, 0, 0);
    r = recv_id(c, id);
    ASSERT_RESULT(r, GAP);
    ASSERT_EQ(r->gap->from_sequence, 1);
    ASSERT_EQ(r->gap->to_sequence, oldest);
    ASSERT_EQ(r->gap->skipped_bytes, oldest - 1);
    sa_response_free(r);
    for (int i = 0; i < 4; i++) {
        r = send_signal(c, pids[i], SIGKILL, 1);
        ASSERT_RESULT(r, ACK);
        sa_response_free(r);
    }
    sa_client_close(c);
    agent_stop(&a);
}

TEST(cancel_and_duplicate_id)
{
    agent_t a;
    agent_start(&a, NULL);
    sa_client_t *c = agent_connect(&a);
    uint32_t pid = start_sh(c, "exec sleep 30", NULL, NULL);
    /* A wait in flight on id 500. */
    Request req = REQUEST_INIT;
    Sandbox__Agent__V1__WaitProcess w = SANDBOX__AGENT__V1__WAIT_PROCESS__INIT;
    w.pid = pid;
    req.id = 500;
    req.op_case = OP(WAIT);
    req.wait = &w;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    /* The same id again: refused, the first one untouched. */
    Sandbox__Agent__V1__Ping p = SANDBOX__AGENT__V1__PING__INIT;
    Request dup = REQUEST_INIT;
    dup.id = 500;
    dup.op_case = OP(PING);
    dup.ping = &p;
    ASSERT_EQ(sa_client_send(c, &dup), 0);
    Response *r = recv_id(c, 500);
    ASSERT_ERROR(r, INVALID_ARGUMENT);
    ASSERT(strstr(r->error->message, "in flight"));
    sa_response_free(r);
    /* Cancel it: the wait ends with CANCELLED, the cancel gets an Ack. */
    Request cn = REQUEST_INIT;
    Sandbox__Agent__V1__Cancel cm = SANDBOX__AGENT__V1__CANCEL__INIT;
    cm.target_id = 500;
    cn.id = 501;
    cn.op_case = OP(CANCEL);
    cn.cancel = &cm;
    ASSERT_EQ(sa_client_send(c, &cn), 0);
    r = recv_id(c, 500);
    ASSERT_ERROR(r, CANCELLED);
    sa_response_free(r);
    r = recv_id(c, 501);
    ASSERT_RESULT(r, ACK);
    ASSERT(r->done);
    sa_response_free(r);
    /* The process did not notice. */
    Sandbox__Agent__V1__GetProcess gp = SANDBOX__AGENT__V1__GET_PROCESS__INIT;
    gp.pid = pid;
    r = simple(c, OP(GET_PROCESS), &gp);
    ASSERT_RESULT(r, PROCESS);
    ASSERT_EQ(r->process->state, SANDBOX__AGENT__V1__PROCESS_STATE__RUNNING);
    sa_response_free(r);
    /* The id is free again. */
    req.id = 500;
    r = NULL;
    ASSERT_EQ(sa_client_send(c, &req), 0);
    r = send_signal(c, pid, SIGKILL, 0);
    ASSERT_RESULT(r, ACK);
    sa_response_free(r);
    r = recv_id(c, 500);
    ASSERT_RESULT(r, EXIT);
    ASSERT_EQ(r->exit->signal, SIGKILL);
    sa_response_free(r);
    sa_client_close(c);
    agent_stop(&a);
}

/* Field 19 of /proc/PID/stat: the nice value. */
static int nice_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    ASSERT(f);
    ASSERT(fgets(buf, sizeof buf, f));
    fclose(f);
    char *p = strrchr(buf, ')');
    ASSERT(p);
    int field = 2, ni = 0;
    for (char *t = strtok(p + 1, " "); t; t = strtok(NULL, " "))
        if (++field == 19) {
            ni = atoi(t);
            break;
        }
    return ni;
}

/* The nice value of a process the agent starts, as the process sees it. */
static int started_nice(sa_client_t *c)
{
    start_opts_t o = {0};
    o.follow = 1;
    uint64_t id;
    start_sh(c, "exec awk '{print $19}' /proc/self/stat", &o, &id);
    collected_t k = {0};
    collect_until_done(c, id, &k);
    ASSERT_EQ(k.exit_code, 0);
    int n = atoi(k.data);
    collected_free(&k);
    return n;
}

/* An agent the operator set ahead of the workload (--nice): what it starts
 * runs at 0. */
TEST(children_get_nice_zero)
{
    agent_start(&A, "--nice", "-5", NULL);
    sa_client_t *c = agent_connect(&A);
    int agent_nice = nice_of(A.pid);
    if (geteuid() == 0)
        ASSERT_EQ(agent_nice, -5);
    ASSERT_EQ(started_nice(c), 0);
    sa_client_close(c);
    agent_stop(&A);
}

/* Without --nice the loop is raised while processes start (prio.h), with
 * reset-on-fork set on its thread so that what it starts, and the threads
 * it makes, run at 0. */
TEST(children_of_the_raised_loop_get_nice_zero)
{
    agent_start(&A, NULL);
    sa_client_t *c = agent_connect(&A);
    ASSERT_EQ(started_nice(c), 0);
    if (geteuid() == 0) {
        int pol = sched_getscheduler(A.pid);
        ASSERT(pol >= 0);
        ASSERT(pol & SCHED_RESET_ON_FORK);
    }
    sa_client_close(c);
    agent_stop(&A);
}

TEST_MAIN(TEST_ENTRY(children_get_nice_zero), TEST_ENTRY(children_of_the_raised_loop_get_nice_zero), TEST_ENTRY(running_processes_share_the_total_cap), TEST_ENTRY(cancel_and_duplicate_id))
