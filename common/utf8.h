/* utf8.h - UTF-8 (prefix utf8_): the one decoder of a sequence, and whether
 * a buffer is valid UTF-8. Shared by the agent (names, messages, log lines)
 * and sandboxctl (paths, JSON output). Pure: no allocation, no state. */
#ifndef SA_UTF8_H
#define SA_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s (1..4, at most left bytes), or 0
 * when it is not one (overlong forms, surrogates and code points beyond
 * U+10FFFF are not UTF-8) or is a NUL. The one decoder of the agent and of
 * sandboxctl. */
size_t utf8_seq_len(const unsigned char *s, size_t left);
/* 1 if buf[0..len) is valid UTF-8 with no NUL, else 0. */
int utf8_valid(const char *buf, size_t len);
/* 1 if buf[0..len) is valid UTF-8, NUL bytes allowed (text that travels
 * with its length, such as output written as a JSON string), else 0. */
int utf8_valid_nul(const char *buf, size_t len);

#endif
