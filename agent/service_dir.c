/* service_dir.c - the services declared in --services-dir: each *.conf
 * file, in name order, read (bounded, never blocking on a FIFO), checked
 * for who may have written it, parsed (svcfile) and started as a detached
 * process. Part of the service module.
 * Errors: a file that cannot be started is logged with its name and why;
 * the others still start. */
#include "service.h"

#include "log.h"
#include "svc_record.h"
#include "svcfile.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One file: read (bounded), check who may have written it, parse, start. */
static int start_file(const char *dir, const char *name)
{
    char path[4096], err[512], *buf = NULL;
    StartProcess *sp = NULL;
    struct stat st;
    ssize_t len = 0;
    int fd = -1, ok = 0;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* O_NONBLOCK: a FIFO dropped into the directory does not hang boot. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
        log_error("service file %s: %s; not started", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        log_error("service file %s: not a regular file; not started", path);
        goto out;
    }
    /* Whoever can write the file chooses what the agent runs, as whom. */
    if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
        log_error("service file %s: writable by others than the agent's user or root "
                  "(owner %u, mode %03o); not started",
                  path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    if (st.st_size > SVCFILE_MAX_SIZE) {
        log_error("service file %s: larger than %d bytes; not started", path, SVCFILE_MAX_SIZE);
        goto out;
    }
    if (!(buf = malloc(SVCFILE_MAX_SIZE + 1)))
        goto out;
    for (;;) {
        ssize_t r = read(fd, buf + len, (size_t)(SVCFILE_MAX_SIZE + 1 - len));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            log_error("service file %s: %s; not started", path, strerror(errno));
            goto out;
        }
        if (r == 0 || (len += r) > SVCFILE_MAX_SIZE)
            break;
    }
    if (svcfile_parse(buf, (size_t)len, path, &sp, err, sizeof err) < 0) {
        log_error("service file %s; not started", err);
        goto out;
    }
    if (proc_start_detached(sp, err, sizeof err) < 0) {
        log_error("service file %s: %s", path, err);
        goto out;
    }
    log_info("service '%s' started from %s", sp->tag, path);
    ok = 1;
out:
    if (sp)
        sandbox__agent__v1__start_process__free_unpacked(sp, NULL);
    free(buf);
    if (fd >= 0)
        close(fd);
    return ok;
}

int svc_start_dir(const char *dir, int missing_ok)
{
    DIR *d;
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int started = 0;

    if (!dir || !dir[0])
        return 0;
    if (!(d = opendir(dir))) {
        if (errno != ENOENT || !missing_ok)
            log_warn("--services-dir %s: %s", dir, strerror(errno));
        return 0;
    }
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        char **nn;
        if (de->d_name[0] == '.' || len <= 5 || strcmp(de->d_name + len - 5, ".conf"))
            continue;
        if (n == cap) {
            if (cap >= 4096 || !(nn = util_grow(names, &cap, n, sizeof *nn, 16))) {
                log_error("--services-dir %s: too many files; the rest are not started", dir);
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n; i++) {
        started += start_file(dir, names[i]);
        free(names[i]);
    }
    free(names);
    return started;
}
