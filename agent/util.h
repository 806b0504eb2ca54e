/* util.h - tiny helpers every module uses: clocks, min/max, intrusive
 * doubly linked lists, descriptors and the outcome of a read, growing
 * arrays, UTF-8.
 * Errors: functions return 0 or a negative errno, or NULL on ENOMEM. */
#ifndef SA_UTIL_H
#define SA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define SA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SA_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SA_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Intrusive doubly linked lists. A node carries its own links, a next and a
 * prev pointer of its own type, named by the caller (so one node can be on
 * several lists: lnext/lprev, knext/kprev); a list is a pointer to its first
 * node, NULL when empty, and for a list kept in order (SA_LIST_APPEND) also
 * one to its last. Both ends are NULL, so
 * `for (n = head; n; n = n->next)` walks it; to unlink while walking, read
 * next first. head, tail and n are lvalues evaluated more than once: pass
 * plain names or field accesses, nothing with side effects. Unlinking clears
 * the node's links. */
#define SA_LIST_PUSH(head, n, next, prev) \
    do { \
        (n)->prev = NULL; \
        (n)->next = (head); \
        if (head) \
            (head)->prev = (n); \
        (head) = (n); \
    } while (0)

#define SA_LIST_APPEND(head, tail, n, next, prev) \
    do { \
        (n)->next = NULL; \
        (n)->prev = (tail); \
        if (tail) \
            (tail)->next = (n); \
        else \
            (head) = (n); \
        (tail) = (n); \
    } while (0)

#define SA_LIST_UNLINK(head, n, next, prev) \
    do { \
        if ((n)->prev) \
            (n)->prev->next = (n)->next; \
        else \
            (head) = (n)->next; \
        if ((n)->next) \
            (n)->next->prev = (n)->prev; \
        (n)->next = (n)->prev = NULL; \
    } while (0)

/* SA_LIST_UNLINK for a list with a tail pointer. */
#define SA_LIST_UNLINK_TAIL(head, tail, n, next, prev) \
    do { \
        if (!(n)->next) \
            (tail) = (n)->prev; \
        SA_LIST_UNLINK(head, n, next, prev); \
    } while (0)

static inline uint64_t util_now_unix_nano(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t util_now_mono_nano(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Set O_NONBLOCK and FD_CLOEXEC; returns 0 or -errno. */
int util_set_nonblock_cloexec(int fd);

/* read(2) with its outcomes decided in one place: > 0 bytes read, 0 at the
 * end of the file, -EAGAIN when a non-blocking descriptor has nothing now
 * (EWOULDBLOCK is the same), else -errno. An interrupted read (EINTR) is
 * tried again: it is never the end. util_pread is the same at an offset. */
ssize_t util_read(int fd, void *buf, size_t len);
ssize_t util_pread(int fd, void *buf, size_t len, off_t off);

/* Room for element n of an array that grows by doubling: when n reaches
 * *cap, arr is reallocated to twice as many elements of size elem (first
 * when it is empty) and *cap updated. Returns the array, or NULL on ENOMEM
 * with arr and *cap as they were. */
void *util_grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first);

/* Free a NULL-terminated array of strings (argv, envp) and its strings;
 * NULL is nothing. */
void util_strv_free(char **v);

/* Undo, in place, /proc/self/mountinfo's octal escapes of a field: space,
 * tab, newline and backslash are written as \ooo. */
void util_mountinfo_unescape(char *s);

/* Copy src into a valid UTF-8 string, replacing invalid sequences with
 * U+FFFD. Returns a malloc'd string or NULL on ENOMEM. */
char *util_utf8_sanitize(const char *src, size_t len);

/* Note n bytes of a large release given back to the allocator;
 * util_trim() returns the free pages to the system (malloc_trim), which
 * glibc otherwise keeps for the process. conn decides when (after a few
 * megabytes, once the frees have stopped: a bulk transfer reuses them). */
void util_freed(size_t n);
size_t util_freed_pending(void);
void util_trim(void);
/* Give back the stack pages below the caller's frame: start-up runs deep
 * (cgroup discovery, the configuration, the dynamic loader), and those
 * pages would stay dirty for the agent's life while the loop runs far
 * shallower. Any later use finds fresh zero pages. */
void util_stack_release(void);
/* Large blocks (a frame's input buffer, an upload's chunk) come from the
 * heap and go back to it when freed, for the next one, instead of each
 * being a fresh mapping whose every page faults in on first touch; the
 * pages return to the system when the frees stop (util_trim). */
void util_heap_keep(void);

#endif
