/* ctl_proc.c - sandboxctl's process commands. */
#include "ctl.h"

const ctl_cmd_t ctl_cmds_proc[] = {
    {NULL, NULL, NULL, NULL},
};
