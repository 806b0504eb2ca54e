/* outlog.c - see outlog.h.
 *
 * Chunks live in a ring of pointers, oldest first, so eviction pops the
 * front and a cursor finds its chunk by binary search on the sequence.
 * Small reads of the same stream share one chunk (up to SMALL_CAP bytes), so
 * a chatty process does not cost a malloc per line; a chunk is shrunk to its
 * data when the next one starts.
 * Errors: 0 or -errno, as outlog.h says.
 */
#include "outlog.h"

#include "util.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_CAP 4096
#define RING_INITIAL 16

static outlog_chunk_t *at(const outlog_t *log, size_t i)
{
    return log->ring[(log->head + i) & (log->ring_cap - 1)];
}

static outlog_chunk_t **slot(outlog_t *log, size_t i)
{
    return &log->ring[(log->head + i) & (log->ring_cap - 1)];
}

void outlog_init(outlog_t *log, uint64_t window, int lossless, uint64_t *account)
{
    memset(log, 0, sizeof *log);
    log->window = window;
    log->lossless = lossless ? 1 : 0;
    log->account = account;
}

void outlog_free(outlog_t *log)
{
    for (size_t i = 0; i < log->n; i++)
        outlog_chunk_unref(at(log, i));
    if (log->account)
        *log->account -= log->kept;
    free(log->ring);
    log->ring = NULL;
    log->n = log->ring_cap = log->head = 0;
    log->kept = log->cost = 0;
    log->followers = NULL;
    log->n_followers = 0;
}

void outlog_chunk_ref(const outlog_chunk_t *c) { ((outlog_chunk_t *)c)->refs++; }

void outlog_chunk_unref(const outlog_chunk_t *c)
{
    if (--((outlog_chunk_t *)c)->refs == 0)
        free((outlog_chunk_t *)c);
}

static int ring_push(outlog_t *log, outlog_chunk_t *c)
{
    if (log->n == log->ring_cap) {
        size_t ncap = log->ring_cap ? log->ring_cap * 2 : RING_INITIAL;
        outlog_chunk_t **nr = malloc(ncap * sizeof *nr);
        if (!nr)
            return -ENOMEM;
        for (size_t i = 0; i < log->n; i++)
            nr[i] = at(log, i);
        free(log->ring);
        log->ring = nr;
        log->ring_cap = ncap;
        log->head = 0;
    }
    *slot(log, log->n) = c;
    log->n++;
    return 0;
}

/* The smallest cursor of the followers, or UINT64_MAX with none. */
static uint64_t min_follower(const outlog_t *log)
{
    uint64_t m = UINT64_MAX;
    for (const outlog_cursor_t *f = log->followers; f; f = f->_next)
        if (f->seq < m)
            m = f->seq;
    return m;
}

/* Drop the oldest kept chunk, c, from the log and its accounts. */
static void evict_oldest(outlog_t *log, outlog_chunk_t *c)
{
    log->evicted[c->stream] += c->len;
    log->kept -= c->len;
    log->cost -= c->len + OUTLOG_CHUNK_OVERHEAD;
    if (log->account)
        *log->account -= c->len;
    log->head = (log->head + 1) & (log->ring_cap - 1);
    log->n--;
    outlog_chunk_unref(c);
}

/* Drop the oldest chunks while over the window, keeping the newest one (so
 * a window smaller than one read still replays that read). Lossless: keep
 * what a follower still needs, and pause the producer instead. */
static void evict(outlog_t *log)
{
    uint64_t need = log->lossless ? min_follower(log) : UINT64_MAX;
    int blocked = 0;
    while (log->n > 1 && log->cost > log->window) {
        outlog_chunk_t *c = at(log, 0);
        if (c->seq + c->len > need) {
            blocked = 1;
            break;
        }
        evict_oldest(log, c);
    }
    log->oldest_seq = log->n ? at(log, 0)->seq : log->next_seq;
    log->paused = blocked;
}

/* Give back the unused room of the tail before a new chunk follows it. */
static void seal_tail(outlog_t *log)
{
    outlog_chunk_t *t = log->n ? at(log, log->n - 1) : NULL;
    /* A referenced chunk cannot move: it keeps its room. */
    if (t && t->refs == 1 && t->cap - t->len > 256) {
        outlog_chunk_t *s = realloc(t, sizeof *t + t->len);
        if (s) {
            s->cap = s->len;
            *slot(log, log->n - 1) = s;
        }
    }
}

/* Make c (len bytes of stream, already in its data) the newest chunk. */
static int push_chunk(outlog_t *log, outlog_chunk_t *c, int stream, size_t len, uint64_t ts)
{
    seal_tail(log);
    c->seq = log->next_seq;
    c->offset = log->total[stream];
    c->ts = ts;
    c->len = (uint32_t)len;
    c->stream = (uint8_t)stream;
    c->refs = 1;
    if (ring_push(log, c) < 0)
        return -ENOMEM;
    log->cost += OUTLOG_CHUNK_OVERHEAD;
    return 0;
}

/* Account len new bytes of stream and evict beyond the window. */
static void appended(outlog_t *log, int stream, size_t len)
{
    log->next_seq += len;
    log->total[stream] += len;
    log->kept += len;
    log->cost += len;
    if (log->account)
        *log->account += len;
    if (log->cost > log->window)
        evict(log);
}

int outlog_append(outlog_t *log, int stream, const void *data, size_t len, uint64_t ts)
{
    outlog_chunk_t *t = log->n ? at(log, log->n - 1) : NULL;

    if (!len)
        return 0;
    if (stream < 0 || stream >= OUTLOG_STREAMS || len > UINT32_MAX / 2)
        return -EINVAL;
    if (t && t->stream == stream && t->cap - t->len >= len) {
        memcpy(t->data + t->len, data, len);
        t->len += (uint32_t)len;
    } else {
        size_t cap = len < SMALL_CAP ? SMALL_CAP : len;
        outlog_chunk_t *c = malloc(sizeof *c + cap);
        if (!c)
            return -ENOMEM;
        c->cap = (uint32_t)cap;
        memcpy(c->data, data, len);
        if (push_chunk(log, c, stream, len, ts) < 0) {
            free(c);
            return -ENOMEM;
        }
    }
    appended(log, stream, len);
    return 0;
}

uint8_t *outlog_buf_new(size_t cap)
{
    outlog_chunk_t *c;
    if (cap > UINT32_MAX / 2 || !(c = malloc(sizeof *c + cap)))
        return NULL;
    c->cap = (uint32_t)cap;
    return c->data;
}

void outlog_buf_free(uint8_t *buf)
{
    if (buf)
        free((char *)buf - offsetof(outlog_chunk_t, data));
}

int outlog_append_buf(outlog_t *log, int stream, uint8_t *buf, size_t len, uint64_t ts,
                      int *taken)
{
    outlog_chunk_t *c = (outlog_chunk_t *)(void *)(buf - offsetof(outlog_chunk_t, data));
    outlog_chunk_t *t = log->n ? at(log, log->n - 1) : NULL;

    *taken = 0;
    if (!len)
        return 0;
    if (stream < 0 || stream >= OUTLOG_STREAMS || len > c->cap)
        return -EINVAL;
    /* Small reads join the tail chunk (one malloc per many lines); a large
     * one becomes a chunk as it is, with no copy. */
    if (len < OUTLOG_ADOPT_MIN || (t && t->stream == stream && t->cap - t->len >= len))
        return outlog_append(log, stream, buf, len, ts);
    /* A read that filled a fraction of the buffer gives the rest back at
     * once: the window counts bytes kept, and the slack must not escape it. */
    if (c->cap - len > SMALL_CAP) {
        outlog_chunk_t *s = realloc(c, sizeof *c + len);
        if (s) {
            c = s;
            c->cap = (uint32_t)len;
        }
    }
    if (push_chunk(log, c, stream, len, ts) < 0) {
        /* c may have moved: the caller's buffer is c's data either way */
        *taken = 1;
        free(c);
        return -ENOMEM;
    }
    *taken = 1;
    appended(log, stream, len);
    return 0;
}

const uint8_t *outlog_newest(const outlog_t *log, size_t len)
{
    const outlog_chunk_t *t = log->n ? at(log, log->n - 1) : NULL;
    return t && len <= t->len ? t->data + t->len - len : NULL;
}

void outlog_drop(outlog_t *log, int stream, size_t len)
{
    if (!len || stream < 0 || stream >= OUTLOG_STREAMS)
        return;
    /* The log stays one run of bytes: what is kept before the lost bytes
     * goes with them (memory is short anyway). */
    while (log->n) {
        outlog_chunk_t *c = at(log, 0);
        evict_oldest(log, c);
    }
    log->next_seq += len;
    log->total[stream] += len;
    log->evicted[stream] += len;
    log->oldest_seq = log->next_seq;
    log->paused = 0;
}

void outlog_trim(outlog_t *log, uint64_t max_cost)
{
    uint64_t window = log->window;
    if (log->cost <= max_cost)
        return;
    log->window = max_cost;
    evict(log);
    log->window = window;
}

/* Index of the chunk holding seq (oldest_seq <= seq < next_seq). */
static size_t find_chunk(const outlog_t *log, uint64_t seq)
{
    size_t lo = 0, hi = log->n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (at(log, mid)->seq <= seq)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

int outlog_attach(outlog_t *log, outlog_cursor_t *cur, uint64_t from_seq)
{
    memset(cur, 0, sizeof *cur);
    if (from_seq > log->next_seq)
        return -ERANGE;
    if (from_seq == log->oldest_seq) {
        cur->seq = log->oldest_seq;
        memcpy(cur->stream_off, log->evicted, sizeof cur->stream_off);
        cur->known = 1;
    } else if (from_seq == 0) {
        /* Byte 0, evicted: every stream is at 0 there, so the gap to the
         * oldest kept byte is known per stream. */
        cur->seq = 0;
        cur->known = 1;
    } else if (from_seq < log->oldest_seq) {
        /* How the skipped bytes split between the streams is not known. */
        cur->seq = from_seq;
        cur->known = 0;
    } else {
        /* Each stream's position at from_seq: where its next chunk starts,
         * or its total when none follows. Once per follow, not per chunk. */
        int set = 0;
        cur->seq = from_seq;
        memcpy(cur->stream_off, log->total, sizeof cur->stream_off);
        if (from_seq < log->next_seq) {
            for (size_t i = find_chunk(log, from_seq); i < log->n && set != 0xf; i++) {
                const outlog_chunk_t *c = at(log, i);
                if (set & (1 << c->stream))
                    continue;
                set |= 1 << c->stream;
                cur->stream_off[c->stream] =
                    c->offset + (from_seq > c->seq ? from_seq - c->seq : 0);
            }
        }
        cur->known = 1;
    }
    SA_LIST_PUSH(log->followers, cur, _next, _prev);
    log->n_followers++;
    return 0;
}

static int maybe_resume(outlog_t *log)
{
    if (!log->paused)
        return 0;
    evict(log);
    return !log->paused;
}

int outlog_detach(outlog_t *log, outlog_cursor_t *cur)
{
    if (!cur->_prev && log->followers != cur)
        return 0; /* not attached */
    SA_LIST_UNLINK(log->followers, cur, _next, _prev);
    log->n_followers--;
    return maybe_resume(log);
}

/* Where to cut a piece of len bytes so that it does not end inside a UTF-8
 * sequence: before the last sequence when that one is incomplete. */
static size_t utf8_cut(const uint8_t *b, size_t len)
{
    size_t i = len, k = 0;
    while (i > 0 && k < 3 && (b[i - 1] & 0xc0) == 0x80) {
        i--;
        k++;
    }
    if (i == 0)
        return len;
    uint8_t lead = b[i - 1];
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (need > 1 && k + 1 < need && i - 1 > 0)
        return i - 1;
    return len;
}

static void set_data(outlog_item_t *it, const outlog_chunk_t *c, uint64_t delta,
                     const uint8_t *data, size_t len)
{
    it->kind = OUTLOG_DATA;
    it->stream = c->stream;
    it->data = data;
    /* Straight from the chunk, or gathered in the caller's scratch. */
    uintptr_t d = (uintptr_t)data, lo = (uintptr_t)c->data;
    it->chunk = d >= lo && d < lo + c->len ? c : NULL;
    it->len = len;
    it->seq = c->seq + delta;
    it->offset = c->offset + delta;
    it->ts = c->ts;
}

void outlog_peek(const outlog_t *log, const outlog_cursor_t *cur, size_t max, int lines,
                 int final, uint8_t *scratch, outlog_item_t *it)
{
    memset(it, 0, sizeof *it);
    if (cur->seq < log->oldest_seq) {
        it->kind = OUTLOG_GAP;
        it->from_seq = cur->seq;
        it->to_seq = log->oldest_seq;
        if (cur->known) {
            for (int s = 0; s < OUTLOG_STREAMS; s++)
                it->skipped[s] = log->evicted[s] - cur->stream_off[s];
        } else {
            it->skipped[0] = log->oldest_seq - cur->seq;
        }
        return;
    }
    if (cur->seq >= log->next_seq || !log->n || !max)
        return;

    size_t i = find_chunk(log, cur->seq);
    const outlog_chunk_t *c = at(log, i);
    uint64_t delta = cur->seq - c->seq;
    const uint8_t *p = c->data + delta;
    size_t avail = c->len - delta;

    if (!lines) {
        set_data(it, c, delta, p, avail < max ? avail : max);
        return;
    }

    /* Lines: whole lines of one stream. The run is the output of this
     * stream from the cursor up to the next chunk of another stream. */
    size_t limit = max < OUTLOG_LINE_MAX ? max : OUTLOG_LINE_MAX;
    size_t take = avail < limit ? avail : limit;
    const uint8_t *nl = memrchr(p, '\n', take);
    int run_continues = i + 1 < log->n && at(log, i + 1)->stream == c->stream;
    if (nl) {
        set_data(it, c, delta, p, (size_t)(nl - p) + 1);
        return;
    }
    const uint8_t *buf = p;
    size_t got = take;
    int other_follows = i + 1 < log->n && !run_continues;
    if (take < limit && run_continues) {
        /* A line across chunks of the same stream: gather it. */
        memcpy(scratch, p, take);
        for (size_t j = i + 1; j < log->n && got < limit; j++) {
            const outlog_chunk_t *d = at(log, j);
            if (d->stream != c->stream) {
                other_follows = 1;
                break;
            }
            size_t t = d->len < limit - got ? d->len : limit - got;
            memcpy(scratch + got, d->data, t);
            got += t;
        }
        buf = scratch;
        nl = memrchr(buf, '\n', got);
        if (nl) {
            set_data(it, c, delta, buf, (size_t)(nl - buf) + 1);
            return;
        }
    }
    if (got == limit) {
        set_data(it, c, delta, buf, utf8_cut(buf, got));
        return;
    }
    /* A partial line goes out when no more of it can come before other
     * output (the other stream wrote), at the end, or when waiting for the
     * rest would deadlock a lossless log. */
    if (other_follows || final || log->paused)
        set_data(it, c, delta, buf, got);
}

int outlog_consume(outlog_t *log, outlog_cursor_t *cur, const outlog_item_t *it)
{
    if (it->kind == OUTLOG_GAP) {
        cur->seq = it->to_seq;
        memcpy(cur->stream_off, log->evicted, sizeof cur->stream_off);
        cur->known = 1;
    } else if (it->kind == OUTLOG_DATA) {
        cur->seq += it->len;
        cur->stream_off[it->stream] += it->len;
    }
    return maybe_resume(log);
}
