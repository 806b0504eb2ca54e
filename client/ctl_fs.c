/* ctl_fs.c - sandboxctl's file commands. */
#include "ctl.h"

const ctl_cmd_t ctl_cmds_fs[] = {
    {NULL, NULL, NULL, NULL},
};
