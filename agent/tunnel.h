/* tunnel.h - tunnels: byte streams between a client and a TCP port or unix
 * socket reached from inside the guest. Multiplexed (OpenTunnel: many on
 * one connection, TunnelData/TunnelSend with credit-based flow control
 * both ways) or dedicated (Connect: the connection itself becomes the byte
 * stream, relay.h). The limits, --no-tunnels and --tunnel-allow. */
#ifndef SA_TUNNEL_H
#define SA_TUNNEL_H

#include "handler.h"
#include "stream.h"

#include <ev.h>

void tunnel_init(struct ev_loop *loop);

handler_fn tunnel_handle_open;
handler_fn tunnel_handle_connect;
/* TunnelSend and TunnelWindow: they belong to their tunnel (named by
 * tunnel_id), as write_data belongs to its upload, and have no response of
 * their own unless they name no tunnel. Dispatched before the in-flight
 * check, since their id is normally the tunnel's. */
handler_fn tunnel_handle_feed;

/* Cancel of a tunnel's id: sends its TunnelClosed and returns 1 (the
 * caller then ends the stream); 0 when s is not a tunnel. */
int tunnel_cancel(stream_t *s);

/* Open tunnels, multiplexed and dedicated. */
unsigned tunnel_count(void);
/* Close every dedicated tunnel (multiplexed ones close with their
 * connections). */
void tunnel_close_all(void);

#endif
