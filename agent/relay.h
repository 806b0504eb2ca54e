/* relay.h - dedicated tunnels (Connect): the client's socket joined to the
 * target's, every byte of one written to the other through a pipe with
 * splice(2), so nothing is copied in user space. An end of file in one
 * direction is passed on as a half-close; both sockets close when both
 * directions have ended or either fails.
 * Errors: relay_new returns NULL only for want of memory; a failing
 * socket ends the relay, which closes both (logged at debug level). */
#ifndef SA_RELAY_H
#define SA_RELAY_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

typedef struct relay relay_t;

/* A relay that owns target_fd (non-blocking) and waits for the client's
 * socket. desc names the target in logs. NULL on ENOMEM (fd not taken). */
relay_t *relay_new(struct ev_loop *loop, int target_fd, const char *desc);
/* Join: client_fd and the bytes the client sent after its Connect frame
 * (malloc'd, written to the target first) become the relay's. client_fd
 * < 0: the client went away first; everything is released. Matches
 * conn_handover_fn. */
void relay_start(void *relay, int client_fd, uint8_t *pre, size_t pre_len);

/* Relays alive (waiting or running). */
unsigned relay_count(void);
/* Close every relay (shutdown). */
void relay_close_all(void);

#endif
