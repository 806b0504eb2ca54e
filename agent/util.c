/* util.c - helpers shared by every module (see util.h).
 * Errors: 0 or -errno, or NULL on ENOMEM, as util.h says. */
#include "util.h"

#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int util_set_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

ssize_t util_read(int fd, void *buf, size_t len)
{
    ssize_t n;
    while ((n = read(fd, buf, len)) < 0 && errno == EINTR)
        ;
    return n < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : n;
}

ssize_t util_pread(int fd, void *buf, size_t len, off_t off)
{
    ssize_t n;
    while ((n = pread(fd, buf, len, off)) < 0 && errno == EINTR)
        ;
    return n < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : n;
}

void *util_grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : first;
    if (ncap < *cap || ncap > SIZE_MAX / elem)
        return NULL;
    void *na = realloc(arr, ncap * elem);
    if (na)
        *cap = ncap;
    return na;
}

void util_strv_free(char **v)
{
    if (!v)
        return;
    for (size_t i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

void util_mountinfo_unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
}

char *util_utf8_sanitize(const char *src, size_t len)
{
    const unsigned char *s = (const unsigned char *)src;
    char *out = malloc(len * 3 + 1), *o = out; /* worst case: every byte -> U+FFFD */
    if (!out)
        return NULL;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len(s + i, len - i);
        if (n) {
            memcpy(o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    *o = 0;
    return out;
}

static size_t g_freed;

void util_freed(size_t n) { g_freed += n; }

size_t util_freed_pending(void) { return g_freed; }

__attribute__((noinline)) void util_stack_release(void)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    /* Two pages below this frame: room for the calls made from here. */
    uintptr_t top = ((uintptr_t)__builtin_frame_address(0) - 2 * pg) & ~(pg - 1), low = top;
    unsigned char vec;
    /* The stack's mapping ends where mincore says nothing is mapped. */
    while (low > pg && mincore((void *)(low - pg), pg, &vec) == 0)
        low -= pg;
    if (low < top)
        madvise((void *)low, top - low, MADV_DONTNEED);
}

void util_heap_keep(void)
{
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

void util_trim(void)
{
    g_freed = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
