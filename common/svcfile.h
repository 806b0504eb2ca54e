/* svcfile.h - services declared in files: the small key = value format of
 * --services-dir (one service per *.conf file, see docs/PROTOCOL.md,
 * "Services declared at boot"), parsed into the StartProcess a client would
 * send, and the probe specs ("tcp:8080", "http:8080/health", "exec:CMD ...",
 * "output:TEXT", "line:PREFIX") that sandboxctl shares. Pure: no I/O, no
 * loop, so the fuzzer and sandboxctl use it as it is. */
#ifndef SA_SVCFILE_H
#define SA_SVCFILE_H

#include "pb.h"

#include <stddef.h>

#define SVCFILE_MAX_SIZE (64 * 1024)

/* Parse one file's text. name is used in messages and gives the default
 * tag (its base name without ".conf"). 0 with *out (free it with
 * sandbox__agent__v1__start_process__free_unpacked(*out, NULL)), or -1 with
 * err as "NAME:LINE: what is wrong". */
int svcfile_parse(const char *text, size_t len, const char *name,
                  Sandbox__Agent__V1__StartProcess **out, char *err, size_t n);

/* A probe spec into a new Probe (free with
 * sandbox__agent__v1__probe__free_unpacked(p, NULL)). NULL with err. */
Sandbox__Agent__V1__Probe *svcfile_parse_probe(const char *spec, char *err, size_t n);

#endif
