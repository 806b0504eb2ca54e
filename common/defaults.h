/* defaults.h - the default socket address, shared by the agent and
 * sandboxctl so that both work with no flags. Root uses
 * /run/sandbox-agent.sock; other users $XDG_RUNTIME_DIR/sandbox-agent.sock,
 * or /tmp/sandbox-agent-UID.sock without one. */
#ifndef SA_DEFAULTS_H
#define SA_DEFAULTS_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Root's socket: the one a control plane and sandboxctl find with no flags. */
#define SA_ROOT_SOCKET "/run/sandbox-agent.sock"
/* Services the agent starts at boot (--services-dir). */
#define SA_SERVICES_DIR "/etc/sandbox-agent/services.d"

static inline void sa_default_socket(char *buf, size_t len, uid_t uid)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (uid == 0)
        snprintf(buf, len, "%s", SA_ROOT_SOCKET);
    else if (xdg && xdg[0] == '/')
        snprintf(buf, len, "%s/sandbox-agent.sock", xdg);
    else
        snprintf(buf, len, "/tmp/sandbox-agent-%u.sock", (unsigned)uid);
}

#endif
