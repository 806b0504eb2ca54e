/* listen.h - the listening sockets (unix, TCP, vsock) and accept. Each
 * accepted connection becomes a conn.
 * Errors: functions return 0 or a negative errno, with a message for the
 * operator. */
#ifndef SA_LISTEN_H
#define SA_LISTEN_H

#include <ev.h>
#include <stddef.h>

/* Open and start listening on addr ("unix:PATH", "tcp:HOST:PORT",
 * "vsock:PORT"). Returns 0 or -errno with a readable reason in err. */
int listen_add(struct ev_loop *loop, const char *addr, char *err, size_t errlen);
/* The bound addresses, comma-separated ("unix:/run/x.sock, tcp:0.0.0.0:7000"),
 * for the start-up log line. Returns the length written. */
size_t listen_describe(char *buf, size_t len);
/* Stop accepting and close every listener; unix socket files are removed. */
void listen_close_all(struct ev_loop *loop);

#endif
