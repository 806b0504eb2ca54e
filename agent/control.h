/* control.h - the connection-level operations: Hello, Ping, GetInfo and
 * Cancel. */
#ifndef SA_CONTROL_H
#define SA_CONTROL_H

#include "dispatch.h"

#define PROTOCOL_VERSION 1

dispatch_handler_fn control_hello;
dispatch_handler_fn control_ping;
dispatch_handler_fn control_info;
dispatch_handler_fn control_cancel;

/* Agent start time, set once by main. */
void control_set_start_time(void);

#endif
