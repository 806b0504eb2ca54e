/* ctl.h - what sandboxctl's subcommands share: the connection, output
 * format, and the table each command module exports. */
#ifndef SA_CTL_H
#define SA_CTL_H

#include "client.h"
#include "pb.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ctl_cmd ctl_cmd_t;

typedef struct ctl {
    const char *addr;     /* --connect, or NULL for the default */
    const char *token;    /* --token-file contents, or NULL */
    int json;             /* --json */
    sa_client_t *cli;     /* after ctl_connect */
    const ctl_cmd_t *cmd; /* the command being run */
} ctl_t;

/* argv[0] is the subcommand name; returns the process exit status. */
typedef int ctl_cmd_fn(ctl_t *ctl, int argc, char **argv);

/* One command. To add one: an entry in a module's table (and the module's
 * table in sandboxctl.c's list); `CMD --help`, `help CMD` and the overview
 * come from these strings. */
struct ctl_cmd {
    const char *name;
    ctl_cmd_fn *fn;
    const char *usage;   /* arguments, for the help text */
    const char *help;    /* one line */
    const char *details; /* the options and notes `CMD --help` prints; may be NULL */
};

/* Tables, each ended by an entry with name NULL. */
extern const ctl_cmd_t ctl_cmds_base[];
extern const ctl_cmd_t ctl_cmds_proc[];
extern const ctl_cmd_t ctl_cmds_fs[];
extern const ctl_cmd_t ctl_cmds_tunnel[];
extern const ctl_cmd_t ctl_cmds_life[];

/* Connect and say Hello (zlib: ask for compressed responses); prints the
 * reason and returns -1 on failure. */
int ctl_connect(ctl_t *ctl);
int ctl_connect_z(ctl_t *ctl, int zlib);
/* Print "sandboxctl: WHAT: CODE: message" for an Error response (protocol
 * names put in the command line's words), or for a result of an unexpected
 * kind; returns exit status 1. */
int ctl_fail(const char *what, const Response *r);
/* A command that takes no arguments: a usage error for any (2), else
 * connect (1 when that fails). 0 once connected. */
int ctl_begin_bare(ctl_t *ctl, int argc);
/* One request and its final response: 0 with the response in *out (NULL
 * out: freed), 1 after the agent refused (its Error, or a result other
 * than want, said by ctl_fail), -1 after the connection failed (said).
 * want 0: any result but an Error. timeout_ms < 0: as long as it takes. */
int ctl_call(ctl_t *ctl, Request *req, const char *what, int want, int timeout_ms,
             Response **out);
/* The same, any response (an Error too); NULL after the connection failed
 * (said). */
Response *ctl_request(ctl_t *ctl, Request *req, const char *what, int timeout_ms);
/* A streamed request: each(ctl, r, arg) for every response to req that is
 * want (0: any but an Error) until the one marked done. each returns 0, or
 * a status that ends the calls to it (the stream is still read to its end,
 * so the connection stays usable). 0, each's status, 1 after the agent
 * refused (said), -1 after the connection failed (said). */
typedef int ctl_each_fn(ctl_t *ctl, const Response *r, void *arg);
int ctl_stream(ctl_t *ctl, Request *req, const char *what, int want, int timeout_ms,
               ctl_each_fn *each, void *arg);
/* Print "sandboxctl: CMD: <why>" and the command's usage to stderr; returns
 * exit status 2. */
int ctl_usage_error(const ctl_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print a command's help (usage, summary, details) to f. */
void ctl_cmd_help(const ctl_cmd_t *c, FILE *f);

/* A signal by name (TERM, SIGKILL, any case) or number (0 to 64); -1 for
 * neither. */
int ctl_signal_number(const char *s);
/* 1 with *pid when s is a pid (a positive decimal number), else 0. */
int ctl_pid_number(const char *s, uint32_t *pid);

/* ------------------------------------------------------------ names */

/* A path from the command line (bytes) into a request's string field, or
 * into its *_raw twin when it is not valid UTF-8. */
void ctl_set_path(char **str, ProtobufCBinaryData *raw, const char *path);
/* The exact bytes of a name from a response (its *_raw twin when set, else
 * the string), NUL-terminated, malloc'd; NULL on ENOMEM. */
char *ctl_name_bytes(const char *str, const ProtobufCBinaryData *raw);

/* ------------------------------------------------------------ JSON lines */

/* Print a JSON string literal (escaped) to stdout. */
void ctl_json_string(const char *s);
void ctl_json_string_n(const char *s, size_t n);
/* Print base64 of data as a JSON string. */
/* Seconds on the monotonic clock, for progress rates and grace periods. */
double ctl_now(void);
/* A byte count for people: "unit" below 1 KiB ("B" or "bytes"), then KiB... TiB. */
void ctl_human(const char *unit, double b, char *out, size_t len);
void ctl_json_base64(const uint8_t *data, size_t n);
/* Print "KEY":"str" and, when raw is set, ,"KEY_raw":"base64". */
void ctl_json_name(const char *key, const char *str, const ProtobufCBinaryData *raw);

#endif
