/* control.h - the connection-level operations: Hello, Ping, GetInfo and
 * Cancel.
 * Errors: handlers answer their request themselves (handler.h). */
#ifndef SA_CONTROL_H
#define SA_CONTROL_H

#include "handler.h"

#define PROTOCOL_VERSION 1

handler_fn control_hello;
handler_fn control_ping;
handler_fn control_info;
handler_fn control_cancel;

/* Agent start time, set once by main. */
void control_set_start_time(void);

#endif
