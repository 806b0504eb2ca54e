/* log.c - see log.h. Lines are assembled in one buffer and written with a
 * single write(2) so concurrent writers (children inheriting stderr) do not
 * interleave inside a line. Messages quote what clients sent (names, paths),
 * so control characters are escaped in both formats: a client cannot forge a
 * log line with a newline, and JSON lines stay valid JSON (invalid UTF-8
 * becomes U+FFFD).
 * Errors: none to the caller (see log.h). */
#include "log.h"

#include "utf8.h"
#include "util.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level g_level = LOG_INFO;
static int g_json;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* While the log's file system is frozen (log_hold), lines wait here: a
 * write(2) to a frozen file system would block the loop until the thaw. */
#define HOLD_MAX (64 * 1024)
static pthread_mutex_t g_hold_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_held;
static char *g_hold_buf;
static size_t g_hold_len;
static unsigned long g_hold_dropped;

void log_setup(enum log_level level, int json)
{
    g_level = level;
    g_json = json;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i]))
            return i;
    if (!strcmp(s, "warning"))
        return LOG_WARN;
    return -1;
}

int log_enabled(enum log_level level) { return level >= g_level; }

/* Escape msg into out (always NUL-terminated). */
static void escape(const char *msg, char *out, size_t outlen, int json)
{
    const unsigned char *p = (const unsigned char *)msg;
    size_t n = strlen(msg), o = 0;

    while (n && o + 8 < outlen) {
        if (*p == '\n' || *p == '\r' || *p == '\t') {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
            p++, n--;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, json ? "\\u%04x" : "\\x%02x", *p);
            p++, n--;
        } else if (json && (*p == '"' || *p == '\\')) {
            out[o++] = '\\';
            out[o++] = (char)*p++;
            n--;
        } else if (json && *p >= 0x80) {
            size_t len = utf8_seq_len(p, n);
            if (!len) {
                o += (size_t)snprintf(out + o, outlen - o, "\\ufffd");
                p++, n--;
            } else {
                memcpy(out + o, p, len);
                o += len;
                p += len;
                n -= len;
            }
        } else {
            out[o++] = (char)*p++;
            n--;
        }
    }
    out[o] = 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char msg[1024], esc[2100], line[2300];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level < g_level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    escape(msg, esc, sizeof esc, g_json);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (g_json) {
        n = snprintf(line, sizeof line,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\","
                     "\"pid\":%d,\"msg\":\"%s\"}\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, level_names[level], (int)getpid(), esc);
    } else {
        n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %-5s %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, level_names[level], esc);
    }
    if (n > (int)sizeof line - 1) {
        /* Cut, but keep the line a line. */
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    if (n > 0 && __atomic_load_n(&g_held, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&g_hold_mu);
        if (g_held) {
            if (g_hold_buf && g_hold_len + (size_t)n <= HOLD_MAX) {
                memcpy(g_hold_buf + g_hold_len, line, (size_t)n);
                g_hold_len += (size_t)n;
            } else {
                g_hold_dropped++;
            }
            n = 0;
        }
        pthread_mutex_unlock(&g_hold_mu);
    }
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to report a failing stderr */
    }
}

void log_hold(int hold)
{
    char *buf = NULL;
    size_t len = 0;
    unsigned long dropped = 0;

    pthread_mutex_lock(&g_hold_mu);
    if (hold && !g_held) {
        /* Without the buffer every held line is counted as dropped. */
        g_hold_buf = malloc(HOLD_MAX);
        g_hold_len = 0;
        g_hold_dropped = 0;
        __atomic_store_n(&g_held, 1, __ATOMIC_RELEASE);
    } else if (!hold && g_held) {
        __atomic_store_n(&g_held, 0, __ATOMIC_RELEASE);
        buf = g_hold_buf;
        len = g_hold_len;
        dropped = g_hold_dropped;
        g_hold_buf = NULL;
        g_hold_len = 0;
        g_hold_dropped = 0;
    }
    pthread_mutex_unlock(&g_hold_mu);
    if (buf && len && write(STDERR_FILENO, buf, len) < 0) {
        /* nowhere left to report a failing stderr */
    }
    free(buf);
    if (dropped)
        log_warn("%lu log lines dropped while the log's file system was frozen", dropped);
}

int log_held(void) { return __atomic_load_n(&g_held, __ATOMIC_ACQUIRE); }
