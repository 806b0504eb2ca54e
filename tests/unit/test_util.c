/* Unit tests of the agent's one UTF-8 decoder (agent/util.c): the sequence
 * length, validation and sanitising, at every boundary the standard draws. */
#include "harness.h"
#include "util.h"

static size_t seq(const char *s, size_t n) { return util_utf8_seq_len((const unsigned char *)s, n); }

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
    ASSERT_EQ(util_utf8_valid("", 0), 1);
    ASSERT_EQ(util_utf8_valid("caf\xc3\xa9", 5), 1);
    ASSERT_EQ(util_utf8_valid("caf\xc3", 4), 0);
    ASSERT_EQ(util_utf8_valid("a\0b", 3), 0);
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

TEST_MAIN(TEST_ENTRY(seq_lengths), TEST_ENTRY(seq_refuses_what_is_not_utf8),
          TEST_ENTRY(seq_never_reads_past_the_end), TEST_ENTRY(valid),
          TEST_ENTRY(sanitize_replaces_each_bad_byte))
