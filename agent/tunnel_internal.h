/* tunnel_internal.h - what the tunnel files share: the tunnel record, the
 * loop, and the functions one of them defines for the other. tunnel.c:
 * admission, the tunnel object, dialling, OpenTunnel and Connect;
 * tunnel_io.c: the bytes of an open multiplexed tunnel both ways (the
 * stream's next(), TunnelSend and TunnelWindow) and its closing. Private to
 * them. Errors: handlers answer them, as tunnel.h says. */
#ifndef SA_TUNNEL_INTERNAL_H
#define SA_TUNNEL_INTERNAL_H

#include "dial.h"
#include "stream.h"
#include "target.h"
#include "user.h"

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes read from a target per TunnelData. */
#define TUNNEL_CHUNK (256u << 10)

typedef struct tunnel {
    stream_t base; /* first: answers the OpenTunnel or Connect */
    struct tunnel *next, *prev;
    int dedicated;
    char text[160]; /* the target as asked, for messages */
    target_t target;
    user_id_t user;
    int as_user;
    dial_t *dial; /* while dialling */
    int fd;
    ev_io rio, wio;

    int open;           /* connected */
    int fail_err;       /* the dial failed: an Error ends the request */
    char msg[320];      /* its reason */
    int closing;        /* TunnelClosed is next */
    int close_errno;
    char reason[200];
    unsigned opened_sent : 1, rd_eof : 1, wr_eof : 1, wr_shut : 1;

    uint32_t window, agent_window;
    uint64_t credit;      /* bytes the agent may still send */
    uint64_t outstanding; /* client bytes received, not yet credited back */
    uint64_t owed;        /* of which written to the target */
    uint8_t *ibuf;        /* waiting for the target: ibuf[ioff..ilen) */
    size_t ioff, ilen;
    uint64_t bytes_in, bytes_out;
    char local[128], remote[128];
} tunnel_t;

extern struct ev_loop *tunnel_loop;
extern const stream_ops_t tunnel_ops;

/* Error.Code of a failed connection (tunnel.c): the target's state, not
 * the request's fault. */
int tunnel_code_of(int neg_errno);

/* tunnel_io.c */
/* The stream's next(): the dial's failure, TunnelOpened, TunnelData (the
 * credit due and what the target sent), TunnelClosed. */
stream_status_t tunnel_io_next(stream_t *s);
/* The target is connected (t->fd): watch it and send what waits. */
void tunnel_io_open(tunnel_t *t);

#endif
