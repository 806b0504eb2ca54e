/* libFuzzer target: a connection and request dispatch. The input is written
 * to a real connection (a socketpair) and the loop runs until the agent has
 * consumed it; whatever it answers is read and dropped. Requests that would
 * act on the machine (start a process, write or remove files, signal) are
 * filtered out first: the fuzzer explores parsing, routing and error paths,
 * not the host. Tunnels are allowed only to unix sockets in a directory that
 * does not exist, so OpenTunnel, Connect and the tunnel messages run their
 * parsing, rules, limits and failure paths without reaching anything. */
#include "config.h"
#include "conn.h"
#include "dispatch.h"
#include "frame.h"
#include "pb.h"
#include "proc.h"
#include "tunnel.h"

#include <ev.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int harmless(const uint8_t *data, size_t size)
{
    while (size) {
        uint8_t flags;
        uint32_t plen;
        int rc = frame_header_parse(data, size, g_config.max_frame_size, &flags, &plen);
        if (rc != 1 || size < FRAME_HEADER_SIZE + (size_t)plen)
            return 1; /* the rest is a protocol error or a partial frame */
        ProtobufCMessage *m = NULL;
        char err[160];
        if (frame_decode(&sandbox__agent__v1__request__descriptor, flags,
                         data + FRAME_HEADER_SIZE, plen, g_config.max_frame_size, &m, err,
                         sizeof err) == 0) {
            int op = (int)((Request *)m)->op_case;
            protobuf_c_message_free_unpacked(m, NULL);
            switch (op) {
            case OP(HELLO): case OP(PING): case OP(INFO): case OP(CANCEL): case OP(FOLLOW):
            case OP(WAIT): case OP(LIST_PROCESSES): case OP(GET_PROCESS): case OP(STAT):
            case OP(WAIT_READY):
            case OP(OPEN_TUNNEL): case OP(TUNNEL_SEND): case OP(TUNNEL_WINDOW):
            case OP(CONNECT): case OP(_NOT_SET):
                break;
            default:
                return 0;
            }
        }
        data += FRAME_HEADER_SIZE + plen;
        size -= FRAME_HEADER_SIZE + plen;
    }
    return 1;
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    conn_before_sleep(loop);
    (void)w;
    (void)revents;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ev_loop *loop;
    static ev_prepare prep;
    int sv[2];

    if (!loop) {
        config_defaults(&g_config);
        g_config.max_frame_size = 1u << 20;
        g_config.conn_queue_high = 2u << 20;
        loop = ev_default_loop(0);
        ev_prepare_init(&prep, on_prepare);
        ev_prepare_start(loop, &prep);
        proc_init(loop);
        conn_set_request_handler(dispatch_request);
        g_config.tunnel_allow[0] = "unix:/nonexistent-sa-fuzz/*";
        g_config.n_tunnel_allow = 1;
        tunnel_init(loop);
    }
    if (size > 256 * 1024 || !harmless(data, size))
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    conn_t *c = conn_new(loop, sv[0], "unix", "fuzz");
    size_t off = 0;
    char sink[65536];
    for (int turns = 0; turns < 200; turns++) {
        if (off < size) {
            ssize_t w = write(sv[1], data + off, size - off);
            if (w > 0)
                off += (size_t)w;
        } else if (turns > 4 && off == size) {
            shutdown(sv[1], SHUT_WR);
            off = size + 1;
        }
        ev_run(loop, EVRUN_NOWAIT);
        while (read(sv[1], sink, sizeof sink) > 0)
            ;
        if (conn_count() == 0)
            break;
    }
    (void)c;
    conn_close_all();
    tunnel_close_all();
    conn_before_sleep(loop);
    close(sv[1]);
    return 0;
}
