/* log.c - see log.h. Lines are assembled in one buffer and written with a
 * single write(2) so concurrent writers (children inheriting stderr) do not
 * interleave inside a line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level g_level = LOG_INFO;
static int g_json;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

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

void log_msg(enum log_level level, const char *fmt, ...)
{
    char msg[1024], line[2300];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level < g_level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (g_json) {
        char esc[2100];
        size_t o = 0;
        for (const unsigned char *p = (const unsigned char *)msg; *p && o < sizeof esc - 7; p++) {
            if (*p == '"' || *p == '\\') {
                esc[o++] = '\\';
                esc[o++] = (char)*p;
            } else if (*p < 0x20) {
                o += (size_t)snprintf(esc + o, sizeof esc - o, "\\u%04x", *p);
            } else {
                esc[o++] = (char)*p;
            }
        }
        esc[o] = 0;
        n = snprintf(line, sizeof line,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\",\"msg\":\"%s\"}\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, level_names[level], esc);
    } else {
        n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %-5s %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, level_names[level], msg);
    }
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1;
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to report a failing stderr */
    }
}
