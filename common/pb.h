/* pb.h - short names for the generated wire types (proto/agent.proto).
 *
 * protoc-c spells every type with its full package prefix; these aliases keep
 * the agent's code readable. Only types and constants, no logic.
 */
#ifndef SA_PB_H
#define SA_PB_H

#include "agent.pb-c.h"

typedef Sandbox__Agent__V1__Request Request;
typedef Sandbox__Agent__V1__Response Response;
typedef Sandbox__Agent__V1__Error PbError;
typedef Sandbox__Agent__V1__Ack Ack;
typedef Sandbox__Agent__V1__HelloReply HelloReply;
typedef Sandbox__Agent__V1__Pong Pong;
typedef Sandbox__Agent__V1__Info Info;
typedef Sandbox__Agent__V1__ProcessStarted ProcessStarted;
typedef Sandbox__Agent__V1__OutputEvent OutputEvent;
typedef Sandbox__Agent__V1__OutputGap OutputGap;
typedef Sandbox__Agent__V1__ProcessExit ProcessExit;
typedef Sandbox__Agent__V1__ProcessInfo ProcessInfo;
typedef Sandbox__Agent__V1__ProcessList ProcessList;
typedef Sandbox__Agent__V1__FileChunk FileChunk;
typedef Sandbox__Agent__V1__FileEnd FileEnd;
typedef Sandbox__Agent__V1__WriteFileResult WriteFileResult;
typedef Sandbox__Agent__V1__DirEntries DirEntries;
typedef Sandbox__Agent__V1__Entry Entry;
typedef Sandbox__Agent__V1__FsEvent FsEvent;

#define REQUEST_INIT SANDBOX__AGENT__V1__REQUEST__INIT
#define RESPONSE_INIT SANDBOX__AGENT__V1__RESPONSE__INIT
#define request_unpack(len, data) sandbox__agent__v1__request__unpack(NULL, (len), (data))
#define request_free(r) sandbox__agent__v1__request__free_unpacked((r), NULL)

/* Request.op cases */
#define OP(name) SANDBOX__AGENT__V1__REQUEST__OP_##name
/* Response.result cases */
#define RES(name) SANDBOX__AGENT__V1__RESPONSE__RESULT_##name
/* Error.Code values */
#define CODE(name) SANDBOX__AGENT__V1__ERROR__CODE__##name

#endif
