/* ctl.h - what sandboxctl's subcommands share: the connection, output
 * format, and the table each command module exports. */
#ifndef SA_CTL_H
#define SA_CTL_H

#include "client.h"
#include "pb.h"

typedef struct ctl {
    const char *addr;  /* --connect, or NULL for the default */
    const char *token; /* --token-file contents, or NULL */
    int json;          /* --json */
    sa_client_t *cli;  /* after ctl_connect */
} ctl_t;

/* argv[0] is the subcommand name; returns the process exit status. */
typedef int ctl_cmd_fn(ctl_t *ctl, int argc, char **argv);

typedef struct ctl_cmd {
    const char *name;
    ctl_cmd_fn *fn;
    const char *usage; /* arguments, for the help text */
    const char *help;  /* one line */
} ctl_cmd_t;

/* Tables, each ended by an entry with name NULL. */
extern const ctl_cmd_t ctl_cmds_base[];
extern const ctl_cmd_t ctl_cmds_proc[];
extern const ctl_cmd_t ctl_cmds_fs[];

/* Connect and say Hello; prints the reason and returns -1 on failure. */
int ctl_connect(ctl_t *ctl);
/* Print "sandboxctl: WHAT: CODE: message" for an Error response, or for a
 * result of an unexpected kind; returns exit status 1. */
int ctl_fail(const char *what, const Response *r);
/* Print a JSON string literal (escaped) to stdout. */
void ctl_json_string(const char *s);

#endif
