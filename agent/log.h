/* log.h - one line per event to stderr, with levels and an optional JSON
 * format. Only the top layers log; lower layers return -errno.
 * Errors: logging never fails its caller; a line that cannot be written is
 * lost. */
#ifndef SA_LOG_H
#define SA_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_setup(enum log_level level, int json);
/* Parse "debug", "info", "warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Hold (1) or release (0) the log: while held, lines are kept in a bounded
 * buffer (64 KiB; the rest are counted) instead of written, because the
 * file system under stderr is frozen. Release writes them out, then how
 * many were dropped. */
void log_hold(int hold);
int log_held(void);

#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
