/* ctl_cp.c - sandboxctl's cp: ':' marks the agent's side, as with scp;
 * the options, the progress bar, and each source to its destination
 * (ctl_upload.c, ctl_download.c). Every transfer is checked against the
 * agent's crc32. */
#include "ctl_fs.h"

#include "ctl.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ctl_cp_opts_t ctl_cp;
int ctl_cp_progress_off;

/* ------------------------------------------------------------ progress */

void ctl_progress_start(ctl_progress_t *p, const char *name, uint64_t total)
{
    p->on = isatty(2) && !ctl_cp_progress_off;
    p->name = name;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = ctl_now();
}

void ctl_progress_draw(ctl_progress_t *p, int final)
{
    double t = ctl_now();
    if (!p->on || (!final && t - p->last < 0.1))
        return;
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? (double)p->done / el : 0;
    char d[32], tot[32], r[32], eta[32] = "";
    ctl_human("B", (double)p->done, d, sizeof d);
    ctl_human("B", (double)p->total, tot, sizeof tot);
    ctl_human("B", rate, r, sizeof r);
    if (!final && rate > 0 && p->total > p->done) {
        unsigned s = (unsigned)((double)(p->total - p->done) / rate);
        snprintf(eta, sizeof eta, " ETA %u:%02u", s / 60, s % 60);
    }
    int pct = p->total ? (int)(p->done * 100 / p->total) : 100;
    int bar = pct / 5;
    fprintf(stderr, "\r%-24.24s [%.*s%*s] %3d%% %s/%s %s/s%s\033[K", p->name, bar,
            "####################", 20 - bar, "", pct, d, tot, r, eta);
    if (final)
        fputc('\n', stderr);
}

/* ------------------------------------------------------------ cp */

/* One source to the destination dst (an existing directory when dst_dir:
 * the source goes inside it). The same results as upload_entry. */
static int cp_one(ctl_t *ctl, const char *src, const char *dst, int dst_dir)
{
    int rc;
    char *target = NULL;
    if (src[0] != ':') { /* upload */
        const char *rdst = ctl_fs_rpath(dst);
        if (dst_dir && strcmp(src, "-") && !(target = ctl_fs_join(rdst, ctl_fs_base_name(src))))
            return -1;
        rc = ctl_upload_entry(ctl, src, target ? target : rdst, 1);
        free(target);
        return rc;
    }
    /* download */
    const char *rsrc = ctl_fs_rpath(src);
    Response *r = ctl_fs_stat(ctl, rsrc, ctl_cp.follow || !ctl_cp.recursive, "cp");
    if (!r)
        return -1;
    if (r->result_case != RES(ENTRY)) {
        rc = ctl_fail("cp", r);
        sa_response_free(r);
        return rc;
    }
    ctl_item_t it;
    if (ctl_item_of(&it, r->entry) < 0) {
        sa_response_free(r);
        ctl_item_free(&it);
        fprintf(stderr, "sandboxctl: cp: out of memory\n");
        return -1;
    }
    sa_response_free(r);
    if (dst_dir && !(target = ctl_fs_join(dst, ctl_fs_base_name(rsrc)))) {
        ctl_item_free(&it);
        return -1;
    }
    rc = ctl_download_entry(ctl, rsrc, target ? target : dst, &it);
    ctl_item_free(&it);
    free(target);
    return rc;
}

int ctl_cp_cmd(ctl_t *ctl, int argc, char **argv)
{
    int c;
    int z = 0;
    memset(&ctl_cp, 0, sizeof ctl_cp);
    optind = 1;
    opterr = 0;
    while ((c = getopt(argc, argv, "+rRLpaPzu:")) != -1) {
        switch (c) {
        case 'r':
        case 'R': ctl_cp.recursive = 1; break;
        case 'L': ctl_cp.follow = 1; break;
        case 'P': ctl_cp.follow = 0; break;
        case 'p': ctl_cp.keep_time = 1; break;
        case 'a': ctl_cp.recursive = ctl_cp.keep_time = 1; ctl_cp.follow = 0; break;
        case 'z': z = 1; break;
        case 'u': ctl_fs_user = optarg; break;
        default:
            return optopt == 'u' ? ctl_usage_error(ctl, "-u needs a user")
                                 : ctl_usage_error(ctl, "unknown option '-%c'", optopt);
        }
    }
    int n = argc - optind;
    if (n < 2)
        return ctl_usage_error(ctl, "needs a source and a destination (got %d argument%s)", n,
                               n == 1 ? "" : "s");
    char **srcs = argv + optind;
    const char *dst = argv[argc - 1];
    int up = dst[0] == ':';
    for (int i = 0; i < n - 1; i++)
        if ((srcs[i][0] == ':') == up)
            return ctl_usage_error(ctl, "'%s': the sources are on one side and the destination "
                                        "on the other; the agent's side starts with ':'",
                                   srcs[i]);
    if (ctl_connect_z(ctl, z) < 0)
        return 1;
    /* An existing directory receives the sources inside it; several sources
     * need one. */
    int dst_dir = 0;
    if (up) {
        Response *r = ctl_fs_stat(ctl, ctl_fs_rpath(dst), 1, "cp");
        if (!r)
            return 1;
        dst_dir = r->result_case == RES(ENTRY) && r->entry->type == T_DIR;
        sa_response_free(r);
    } else {
        struct stat st;
        dst_dir = strcmp(dst, "-") && stat(dst, &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (n > 2 && !dst_dir) {
        fprintf(stderr, "sandboxctl: cp: %s is not a directory (needed for %d sources)\n", dst,
                n - 1);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n - 1; i++) {
        int k = cp_one(ctl, srcs[i], dst, dst_dir);
        if (k < 0)
            return 1;
        rc |= k;
    }
    return rc ? 1 : 0;
}
