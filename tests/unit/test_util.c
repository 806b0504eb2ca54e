/* Unit tests of agent/util: the one UTF-8 decoder (the sequence length,
 * validation and sanitising, at every boundary the standard draws), the
 * intrusive lists, the outcomes of util_read, util_grow and the mountinfo
 * unescaping. */
#include "harness.h"
#include "utf8.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static size_t seq(const char *s, size_t n) { return utf8_seq_len((const unsigned char *)s, n); }

TEST(seq_lengths)
{
    ASSERT_EQ(seq("a", 1), 1);
    ASSERT_EQ(seq("\xc3\xa9", 2), 2);         /* U+00E9 */
    ASSERT_EQ(seq("\xe2\x82\xac", 3), 3);     /* U+20AC */
    ASSERT_EQ(seq("\xf0\x9f\x98\x80", 4), 4); /* U+1F600 */
    ASSERT_EQ(seq("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF, the last one */
}

TEST(seq_refuses_what_is_not_utf8)
{
    ASSERT_EQ(seq("\0", 1), 0);               /* NUL: not in a name or a string */
    ASSERT_EQ(seq("\x80", 1), 0);             /* a lone continuation byte */
    ASSERT_EQ(seq("\xc0\xaf", 2), 0);         /* overlong '/' */
    ASSERT_EQ(seq("\xc1\xbf", 2), 0);         /* overlong */
    ASSERT_EQ(seq("\xe0\x9f\xbf", 3), 0);     /* overlong 3-byte form */
    ASSERT_EQ(seq("\xed\xa0\x80", 3), 0);     /* U+D800, a surrogate */
    ASSERT_EQ(seq("\xed\xbf\xbf", 3), 0);     /* U+DFFF */
    ASSERT_EQ(seq("\xf0\x8f\xbf\xbf", 4), 0); /* overlong 4-byte form */
    ASSERT_EQ(seq("\xf4\x90\x80\x80", 4), 0); /* beyond U+10FFFF */
    ASSERT_EQ(seq("\xf5\x80\x80\x80", 4), 0);
    ASSERT_EQ(seq("\xc3\x28", 2), 0);         /* a bad continuation */
}

TEST(seq_never_reads_past_the_end)
{
    ASSERT_EQ(seq("\xe2\x82\xac", 2), 0);
    ASSERT_EQ(seq("\xf0\x9f\x98\x80", 3), 0);
    ASSERT_EQ(seq("\xc3\xa9", 1), 0);
}

TEST(valid)
{
    ASSERT_EQ(utf8_valid("", 0), 1);
    ASSERT_EQ(utf8_valid("caf\xc3\xa9", 5), 1);
    ASSERT_EQ(utf8_valid("caf\xc3", 4), 0);
    ASSERT_EQ(utf8_valid("a\0b", 3), 0);
}

TEST(valid_nul_allows_nul_and_nothing_else)
{
    ASSERT_EQ(utf8_valid_nul("a\0b", 3), 1);
    ASSERT_EQ(utf8_valid_nul("\0", 1), 1);
    ASSERT_EQ(utf8_valid_nul("caf\xc3\xa9\0", 6), 1);
    ASSERT_EQ(utf8_valid_nul("\0\xc3", 2), 0);
    ASSERT_EQ(utf8_valid_nul("\xc0\x80", 2), 0); /* an overlong NUL stays invalid */
    ASSERT_EQ(utf8_valid_nul("\xed\xa0\x80", 3), 0);
}

TEST(sanitize_replaces_each_bad_byte)
{
    char *s = util_utf8_sanitize("a\xff" "b\xc3\xa9\xed\xa0\x80", 8);
    ASSERT(s != NULL);
    ASSERT_STR_EQ(s, "a\xef\xbf\xbd" "b\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    free(s);
    s = util_utf8_sanitize("", 0);
    ASSERT(s != NULL);
    ASSERT_STR_EQ(s, "");
    free(s);
}

TEST(mountinfo_unescape)
{
    char a[] = "/mnt/with\\040space\\011tab\\134back";
    char b[] = "/plain";
    char c[] = "/not\\48octal\\";
    util_mountinfo_unescape(a);
    ASSERT_STR_EQ(a, "/mnt/with space\ttab\\back");
    util_mountinfo_unescape(b);
    ASSERT_STR_EQ(b, "/plain");
    util_mountinfo_unescape(c); /* not an escape: left as it is */
    ASSERT_STR_EQ(c, "/not\\48octal\\");
}

TEST(strv_free)
{
    char **v = calloc(3, sizeof *v);
    ASSERT(v != NULL);
    v[0] = strdup("a");
    v[1] = strdup("b");
    ASSERT(v[0] && v[1]);
    util_strv_free(v); /* the sanitizer build counts a leak as a failure */
    util_strv_free(NULL);
}

typedef struct node {
    int v;
    struct node *next, *prev; /* list a */
    struct node *bnext, *bprev; /* list b, kept in order with a tail */
} node_t;

/* The values of a list from its head, and checks that the prev links walk
 * the same nodes back. */
static int walk(node_t *head, node_t *tail, int by_b, int *out)
{
    int n = 0;
    node_t *last = NULL;
    for (node_t *x = head; x; x = by_b ? x->bnext : x->next) {
        ASSERT((by_b ? x->bprev : x->prev) == last);
        out[n++] = x->v;
        last = x;
    }
    if (by_b)
        ASSERT(tail == last);
    return n;
}

TEST(list_push_and_unlink)
{
    node_t x[3] = {{.v = 0}, {.v = 1}, {.v = 2}};
    node_t *head = NULL;
    int got[3];
    for (int i = 0; i < 3; i++)
        SA_LIST_PUSH(head, &x[i], next, prev);
    ASSERT_EQ(walk(head, NULL, 0, got), 3);
    ASSERT(got[0] == 2 && got[1] == 1 && got[2] == 0);
    SA_LIST_UNLINK(head, &x[1], next, prev); /* the middle */
    ASSERT(x[1].next == NULL && x[1].prev == NULL);
    ASSERT_EQ(walk(head, NULL, 0, got), 2);
    ASSERT(got[0] == 2 && got[1] == 0);
    SA_LIST_UNLINK(head, &x[2], next, prev); /* the head */
    ASSERT_EQ(walk(head, NULL, 0, got), 1);
    ASSERT(head == &x[0]);
    SA_LIST_UNLINK(head, &x[0], next, prev); /* the last one */
    ASSERT(head == NULL);
}

TEST(list_append_keeps_the_tail)
{
    node_t x[3] = {{.v = 0}, {.v = 1}, {.v = 2}};
    node_t *head = NULL, *tail = NULL, *ahead = NULL;
    int got[3];
    for (int i = 0; i < 3; i++) {
        SA_LIST_APPEND(head, tail, &x[i], bnext, bprev);
        SA_LIST_PUSH(ahead, &x[i], next, prev); /* a second list, untouched by b */
    }
    ASSERT_EQ(walk(head, tail, 1, got), 3);
    ASSERT(got[0] == 0 && got[1] == 1 && got[2] == 2);
    SA_LIST_UNLINK_TAIL(head, tail, &x[2], bnext, bprev); /* the tail */
    ASSERT(tail == &x[1]);
    ASSERT_EQ(walk(head, tail, 1, got), 2);
    SA_LIST_UNLINK_TAIL(head, tail, &x[0], bnext, bprev); /* the head */
    ASSERT(head == &x[1] && tail == &x[1]);
    SA_LIST_UNLINK_TAIL(head, tail, &x[1], bnext, bprev);
    ASSERT(head == NULL && tail == NULL);
    ASSERT_EQ(walk(ahead, NULL, 0, got), 3);
}

TEST(read_outcomes)
{
    int p[2];
    char buf[8];
    ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    ASSERT_EQ(util_read(p[0], buf, sizeof buf), -EAGAIN); /* nothing now */
    ASSERT_EQ(write(p[1], "abc", 3), 3);
    ASSERT_EQ(util_read(p[0], buf, sizeof buf), 3);
    close(p[1]);
    ASSERT_EQ(util_read(p[0], buf, sizeof buf), 0); /* the end */
    ASSERT_EQ(util_pread(p[0], buf, sizeof buf, 0), -ESPIPE);
    close(p[0]);
    ASSERT_EQ(util_read(p[0], buf, sizeof buf), -EBADF);
}

TEST(grow_doubles_from_first)
{
    int *a = NULL, *na;
    size_t cap = 0;
    for (size_t n = 0; n < 100; n++) {
        ASSERT((na = util_grow(a, &cap, n, sizeof *a, 4)) != NULL);
        a = na;
        a[n] = (int)n;
        ASSERT(cap > n);
    }
    ASSERT_EQ(cap, 128); /* 4, 8, ... 128 */
    ASSERT(util_grow(a, &cap, 50, sizeof *a, 4) == a); /* room already */
    ASSERT_EQ(a[99], 99);
    size_t huge = SIZE_MAX / 2 + 1;
    ASSERT(util_grow(a, &huge, huge, sizeof *a, 4) == NULL); /* would overflow */
    ASSERT_EQ(huge, SIZE_MAX / 2 + 1);
    free(a);
}

TEST_MAIN(TEST_ENTRY(seq_lengths), TEST_ENTRY(seq_refuses_what_is_not_utf8),
          TEST_ENTRY(seq_never_reads_past_the_end), TEST_ENTRY(valid),
          TEST_ENTRY(valid_nul_allows_nul_and_nothing_else),
          TEST_ENTRY(sanitize_replaces_each_bad_byte), TEST_ENTRY(list_push_and_unlink),
          TEST_ENTRY(list_append_keeps_the_tail), TEST_ENTRY(read_outcomes),
          TEST_ENTRY(grow_doubles_from_first), TEST_ENTRY(mountinfo_unescape),
          TEST_ENTRY(strv_free))
