/* fs_entry.c - the Entries of file operations: the arena their strings live
 * in, names that may not be UTF-8, and an Entry from a stat (with the
 * owner's names, from user.h).
 * Errors: a negative errno (or NULL on ENOMEM); nothing here answers. */
#include "fs.h"
#include "fs_internal.h"

#include "utf8.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* ------------------------------------------------------------ arena */

typedef struct fs_ablk {
    struct fs_ablk *next;
    size_t used, cap;
    max_align_t data[];
} fs_ablk_t;

void *fs_arena_alloc(fs_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    fs_ablk_t *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = SA_MAX(n, (size_t)64 * 1024 - sizeof *b);
        if (!(b = malloc(sizeof *b + cap)))
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void fs_arena_free(fs_arena_t *a)
{
    fs_ablk_t *b = a->head, *next;
    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
}

static char *arena_strndup(fs_arena_t *a, const char *s, size_t len)
{
    char *p = fs_arena_alloc(a, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

int fs_set_name(fs_arena_t *a, char **str, ProtobufCBinaryData *raw, const char *src,
                size_t len)
{
    if (utf8_valid(src, len)) {
        if (!(*str = arena_strndup(a, src, len)))
            return -ENOMEM;
        return 0;
    }
    char *clean = util_utf8_sanitize(src, len);
    if (!clean)
        return -ENOMEM;
    *str = arena_strndup(a, clean, strlen(clean));
    free(clean);
    raw->data = (uint8_t *)arena_strndup(a, src, len);
    raw->len = len;
    return *str && raw->data ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------ entries */

static Sandbox__Agent__V1__FileType file_type(mode_t m)
{
    if (S_ISREG(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__FILE;
    if (S_ISDIR(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__DIRECTORY;
    if (S_ISLNK(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__SYMLINK;
    if (S_ISFIFO(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__FIFO;
    if (S_ISSOCK(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__SOCKET;
    if (S_ISCHR(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__CHAR_DEVICE;
    if (S_ISBLK(m))
        return SANDBOX__AGENT__V1__FILE_TYPE__BLOCK_DEVICE;
    return SANDBOX__AGENT__V1__FILE_TYPE__OTHER;
}

int fs_entry_fill(fs_arena_t *a, Entry *e, const char *path, const struct stat *st,
                      const char *target, size_t tlen)
{
    char nbuf[64];
    size_t plen = strlen(path);
    const char *slash = memrchr(path, '/', plen);
    const char *name = slash && plen > 1 ? slash + 1 : path;
    int rc = 0;

    sandbox__agent__v1__entry__init(e);
    rc |= fs_set_name(a, &e->name, &e->name_raw, name, plen - (size_t)(name - path));
    rc |= fs_set_name(a, &e->path, &e->path_raw, path, plen);
    if (target)
        rc |= fs_set_name(a, &e->symlink_target, &e->symlink_target_raw, target, tlen);
    e->type = file_type(st->st_mode);
    e->size = (uint64_t)st->st_size;
    e->mode = st->st_mode & 07777;
    e->uid = st->st_uid;
    e->gid = st->st_gid;
    user_name(st->st_uid, nbuf, sizeof nbuf);
    if (!(e->owner = arena_strndup(a, nbuf, strlen(nbuf))))
        rc = -ENOMEM;
    user_group_name(st->st_gid, nbuf, sizeof nbuf);
    if (!(e->group = arena_strndup(a, nbuf, strlen(nbuf))))
        rc = -ENOMEM;
    e->mtime_unix_nano = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    e->nlink = st->st_nlink;
    e->inode = st->st_ino;
    if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
        e->rdev_major = major(st->st_rdev);
        e->rdev_minor = minor(st->st_rdev);
    }
    return rc ? -ENOMEM : 0;
}

int fs_entry_at(fs_arena_t *a, Entry *e, int dirfd, const char *name, const char *path,
                int follow)
{
    struct stat st;
    char target[PATH_MAX];
    ssize_t tlen = -1;
    int flags = follow ? 0 : AT_SYMLINK_NOFOLLOW;
    if (!*name)
        flags |= AT_EMPTY_PATH; /* dirfd itself (an O_PATH descriptor) */
    if (fstatat(dirfd, name, &st, flags) < 0)
        return -errno;
    if (S_ISLNK(st.st_mode))
        tlen = readlinkat(dirfd, name, target, sizeof target);
    return fs_entry_fill(a, e, path, &st, tlen >= 0 ? target : NULL, tlen >= 0 ? (size_t)tlen : 0);
}
