/*
 * The load generator: a small epoll client with four modes.
 *
 *   loadgen throughput HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S [OPTIONS]
 *   loadgen latency    HOST PORT CONNECTIONS LINE_BYTES WARMUP_S MEASURE_S [OPTIONS]
 *   loadgen churn      HOST PORT CONCURRENCY LINE_BYTES WARMUP_S MEASURE_S [OPTIONS]
 *   loadgen stream     HOST PORT CONNECTIONS DEPTH LINE_BYTES WARMUP_S MEASURE_S
 *
 * (The mode word may be left out for throughput: the harness's original form.)
 *
 * throughput: CONNECTIONS connections each send a batch of LINES pipelined lines
 *   of LINE_BYTES bytes in one write, wait until every line is back, and send the
 *   batch again. Figure: lines echoed in the window.
 * latency: CONNECTIONS connections each keep exactly one line in flight: send,
 *   wait for the echo, send again. Every round trip is timed (CLOCK_MONOTONIC);
 *   the output has percentiles of those completed inside the window.
 * churn: CONCURRENCY slots; each opens a connection (non-blocking connect), sends
 *   one line, reads its echo, closes, and starts over. Figure: connections
 *   completed in the window; percentiles of their connect-to-echo time.
 * stream: a sliding window. CONNECTIONS connections each keep DEPTH lines in
 *   flight: DEPTH lines in the first write, then, after each read, one write of
 *   as many new lines as that read completed echoes. Figure: lines echoed in the
 *   window; percentiles of their round trips (from the write that queued the
 *   line to the read that completed its echo); "recvs", the reads of the window
 *   that returned data (lines / recvs: how many echoes a read carries). Strict
 *   only (no --tolerant).
 *
 * Lines are LINE_BYTES - 1 printable characters and "\n"; a connection's line
 * depends on its index, so echoes crossed between connections are caught. Echoes
 * are checked byte for byte; a "\r" before a "\n" is accepted (POE's line filter
 * ends its lines with "\r\n").
 *
 * Options:
 *   --tolerant       count per-connection failures (connect, closed by the server,
 *                    mismatch, timeout, I/O error), replace the connection and go
 *                    on; without it the first failure ends the run.
 *   --samples FILE   latency: write every round trip (warm-up included) to FILE as
 *                    native float64 pairs (send time in CLOCK_MONOTONIC seconds,
 *                    round trip in seconds).
 *
 * Phases: WARMUP_S seconds not counted, MEASURE_S seconds counted, then a drain
 * (nothing new is sent; wait up to 2 s for what is in flight). SIGUSR1 ends the
 * window early (the harness uses it when the window's end is an event).
 *
 * Output: one JSON object on stdout (also on failure, with "error" set); exit
 * status 0 on success, 1 on failure, 2 on bad arguments. Every wait is bounded:
 * connects (5 s), stalls (strict mode: 5 s without progress), a hard deadline.
 *
 * benchmarks/loadgen.py compiles this file with `cc -O2`; benchmarks/pyloadgen.py
 * is a pure-Python fallback with the same arguments and output: keep them in step.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNECTIONS 10000
#define MAX_BATCH_BYTES (1 << 20)
#define MAX_SAMPLES (50L * 1000 * 1000)
#define STALL_S 5.0
#define DRAIN_S 2.0
#define HARD_EXTRA_S 15.0
#define CONNECT_TIMEOUT_S 5
#define CONN_TIMEOUT_S 5.0 /* churn: connect + echo must finish within this */
#define RETRY_S 0.1        /* tolerant latency mode: wait before reconnecting */
#define PATTERNS 26        /* distinct line contents, by connection index */

/* ---- shared state and helpers ----------------------------------------------------- */

static char error_text[512];
static char last_failure[256];
static int tolerant;
static volatile sig_atomic_t stop_requested;
static int epfd = -1;

/* Per-connection failures, by kind (counted in both modes). */
static struct {
    long connect, closed, mismatch, timeout, io;
} failures;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* The run's fatal error: the first one wins. */
static void fail(const char *fmt, ...) {
    if (error_text[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
}

/* A per-connection failure: counted; in strict mode it also ends the run. */
static void conn_failed(long *counter, int index, const char *what) {
    (*counter)++;
    snprintf(last_failure, sizeof last_failure, "connection %d: %s", index, what);
    if (!tolerant) fail("%s", last_failure);
}

static void on_sigusr1(int signum) {
    (void)signum;
    stop_requested = 1;
}

/* Line k: PATTERNS different contents, each LINE_BYTES long with a final "\n". */
static unsigned char *make_line(int k, int line_bytes) {
    unsigned char *line = malloc((size_t)line_bytes);
    for (int j = 0; j < line_bytes - 1; j++) line[j] = (unsigned char)('a' + (k + j) % 26);
    line[line_bytes - 1] = '\n';
    return line;
}

/* Match received bytes against `expected` from offset *rx. Returns 1 when all of it
 * has arrived, 0 if more is expected, -1 on a mismatch or bytes past its end. */
static int match(const unsigned char *expected, size_t len, size_t *rx,
                 const unsigned char *data, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (*rx == len) return -1; /* bytes that were never sent */
        size_t k = n - i;
        if (k > len - *rx) k = len - *rx;
        if (memcmp(data + i, expected + *rx, k) == 0) { /* fast path */
            *rx += k;
            i += k;
            continue;
        }
        for (; i < n && *rx < len; i++) { /* byte by byte: "\r" before "\n" is fine */
            if (data[i] == expected[*rx]) {
                (*rx)++;
            } else if (!(data[i] == '\r' && expected[*rx] == '\n')) {
                return -1;
            }
        }
    }
    return *rx == len;
}

/* Blocking connect, bounded by SO_SNDTIMEO; then non-blocking. -1 on failure. */
static int connect_blocking(const struct sockaddr_in *addr, char *why, size_t why_len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(why, why_len, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        snprintf(why, why_len, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int watch(int fd, int op, int index, int want_out) {
    struct epoll_event ev;
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.u32 = (unsigned)index;
    return epoll_ctl(epfd, op, fd, &ev);
}

/* Write buf[*tx..len) as far as the socket takes it. 0 on success (maybe partial),
 * -1 on error (errno set). *want_out tracks EPOLLOUT registration. */
static int send_some(int fd, int index, const unsigned char *buf, size_t len, size_t *tx,
                     int *want_out) {
    while (*tx < len) {
        ssize_t n = send(fd, buf + *tx, len - *tx, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        *tx += (size_t)n;
    }
    int want = *tx < len;
    if (want != *want_out) {
        if (watch(fd, EPOLL_CTL_MOD, index, want) < 0) return -1;
        *want_out = want;
    }
    return 0;
}

/* ---- phases: warm-up, measuring window, drain ------------------------------------ */

struct phases {
    int phase; /* 0 warm-up, 1 measuring, 2 draining */
    double warmup, warm_end, measure_end, hard_deadline, drain_deadline;
    double window_start, window_end, cpu_start, cpu_end;
};

static void phases_start(struct phases *p, double warmup, double measure) {
    double t0 = now_s();
    memset(p, 0, sizeof *p);
    p->warmup = warmup;
    p->warm_end = t0 + warmup;
    p->measure_end = p->warm_end + measure;
    p->hard_deadline = p->measure_end + HARD_EXTRA_S;
}

static void phases_update(struct phases *p, double now) {
    if (p->phase == 0 && (now >= p->warm_end || stop_requested)) {
        p->phase = 1;
        p->window_start = now;
        p->cpu_start = cpu_s();
    }
    if (p->phase == 1 && (now >= p->measure_end || stop_requested)) {
        p->phase = 2;
        p->window_end = now;
        p->cpu_end = cpu_s();
        p->drain_deadline = now + DRAIN_S;
        if (p->hard_deadline > now + DRAIN_S + 1) p->hard_deadline = now + DRAIN_S + 1;
    }
}

/* Close the window where it stands if the run stopped early. */
static void phases_finish(struct phases *p) {
    if (p->phase < 2) {
        p->window_end = now_s();
        p->cpu_end = cpu_s();
        if (p->phase == 0) p->window_start = p->window_end;
    }
}

/* ---- output ---------------------------------------------------------------------- */

static void print_json_string(const char *s) {
    putchar('"');
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        if ((unsigned char)*p >= 0x20) putchar(*p);
    }
    putchar('"');
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values (n > 0). */
static double percentile(const double *sorted, long n, double p) {
    long rank = (long)(p * (double)n + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

/* "key": {p50, p90, p99, p999, max, mean} in microseconds; sorts `values`. */
static void print_percentiles(const char *key, double *values, long n) {
    printf("\"%s\": ", key);
    if (n == 0) {
        printf("null, ");
        return;
    }
    qsort(values, (size_t)n, sizeof *values, cmp_double);
    double sum = 0;
    for (long i = 0; i < n; i++) sum += values[i];
    printf("{\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f, "
           "\"mean\": %.3f}, ",
           percentile(values, n, 0.50) * 1e6, percentile(values, n, 0.90) * 1e6,
           percentile(values, n, 0.99) * 1e6, percentile(values, n, 0.999) * 1e6,
           values[n - 1] * 1e6, sum / (double)n * 1e6);
}

/* The fields every mode prints last, then the closing brace. */
static void print_tail(const struct phases *p, long long counted, double max_gap) {
    printf("\"warmup_s\": %.3f, \"window_s\": %.6f, \"lines\": %lld, \"window_cpu_s\": %.6f, "
           "\"max_gap_s\": %.6f, \"failures\": {\"connect\": %ld, \"closed\": %ld, "
           "\"mismatch\": %ld, \"timeout\": %ld, \"io\": %ld}, \"last_failure\": ",
           p->warmup, p->window_end - p->window_start, counted, p->cpu_end - p->cpu_start, max_gap,
           failures.connect, failures.closed, failures.mismatch, failures.timeout, failures.io);
    if (last_failure[0]) {
        print_json_string(last_failure);
    } else {
        printf("null");
    }
    printf(", \"tolerant\": %s, \"error\": ", tolerant ? "true" : "false");
    if (error_text[0]) {
        print_json_string(error_text);
    } else {
        printf("null");
    }
    puts("}");
}

/* ---- throughput mode ------------------------------------------------------------- */

struct tconn {
    int fd;
    size_t tx, rx;
    int want_out;
};

static int run_throughput(const struct sockaddr_in *addr, int nconn, int lines, int line_bytes,
                          double warmup, double measure) {
    size_t batch_len = (size_t)lines * (size_t)line_bytes;
    unsigned char *batch = malloc(batch_len);
    for (int i = 0; i < lines; i++) {
        unsigned char *line = make_line(i, line_bytes);
        memcpy(batch + (size_t)i * line_bytes, line, (size_t)line_bytes);
        free(line);
    }
    struct tconn *conns = calloc((size_t)nconn, sizeof *conns);
    int opened = 0;
    char why[200];
    for (int i = 0; i < nconn; i++) conns[i].fd = -1;
    for (int i = 0; i < nconn && !error_text[0]; i++) {
        int fd = connect_blocking(addr, why, sizeof why);
        if (fd < 0) {
            fail("connection %d: %s", i, why);
            break;
        }
        conns[i].fd = fd;
        opened++;
        watch(fd, EPOLL_CTL_ADD, i, 0);
    }

    struct phases ph;
    phases_start(&ph, warmup, measure);
    long long counted = 0;
    double last_progress = now_s(), max_gap = 0;
    int in_flight = 0;
    for (int i = 0; i < opened && !error_text[0]; i++) {
        if (send_some(conns[i].fd, i, batch, batch_len, &conns[i].tx, &conns[i].want_out) < 0)
            fail("connection %d: send: %s", i, strerror(errno));
        in_flight++;
    }

    static unsigned char buf[1 << 16];
    struct epoll_event events[256];
    while (!error_text[0]) {
        double now = now_s();
        phases_update(&ph, now);
        if (ph.phase == 2 && (in_flight == 0 || now >= ph.drain_deadline)) break;
        if (now - last_progress > max_gap) max_gap = now - last_progress;
        if (now - last_progress > STALL_S) {
            fail("%d connections: no echo for 5 s (server stalled or lost data)", in_flight);
            break;
        }
        if (now >= ph.hard_deadline) {
            fail("hard deadline passed");
            break;
        }
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int e = 0; e < n && !error_text[0]; e++) {
            int index = (int)events[e].data.u32;
            struct tconn *c = &conns[index];
            if ((events[e].events & EPOLLOUT) &&
                send_some(c->fd, index, batch, batch_len, &c->tx, &c->want_out) < 0) {
                fail("connection %d: send: %s", index, strerror(errno));
                break;
            }
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                fail("connection %d: recv: %s", index, strerror(errno));
                break;
            }
            if (got == 0) {
                fail("connection %d: closed by the server", index);
                break;
            }
            last_progress = now;
            int done = match(batch, batch_len, &c->rx, buf, (size_t)got);
            if (done < 0) {
                fail("connection %d: echo differs from what was sent", index);
                break;
            }
            if (done == 1) {
                in_flight--;
                if (ph.phase == 1) counted++;
                if (ph.phase < 2) {
                    c->tx = c->rx = 0;
                    if (send_some(c->fd, index, batch, batch_len, &c->tx, &c->want_out) < 0) {
                        fail("connection %d: send: %s", index, strerror(errno));
                        break;
                    }
                    in_flight++;
                }
            }
        }
    }
    phases_finish(&ph);
    for (int i = 0; i < nconn; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    printf("{\"impl\": \"c\", \"mode\": \"throughput\", \"connections\": %d, \"opened\": %d, "
           "\"lines_per_batch\": %d, \"line_bytes\": %d, \"unfinished_batches\": %d, ",
           nconn, opened, lines, line_bytes, in_flight);
    print_tail(&ph, counted * lines, max_gap);
    return error_text[0] ? 1 : 0;
}

/* ---- latency mode ---------------------------------------------------------------- */

struct lconn {
    int fd;        /* -1: not connected (tolerant mode reconnects it) */
    size_t tx, rx; /* bytes of the line written / echoed */
    int want_out;
    int busy;       /* a line is in flight */
    double sent;    /* when it was sent */
    double retry_at;
};

struct samples {
    double *data; /* pairs: send time, round trip */
    long n, cap;
};

static void samples_add(struct samples *s, double sent, double rtt) {
    if (s->n >= MAX_SAMPLES) return;
    if (s->n == s->cap) {
        long cap = s->cap ? s->cap * 2 : 65536;
        double *data = realloc(s->data, (size_t)cap * 2 * sizeof *data);
        if (data == NULL) return;
        s->data = data;
        s->cap = cap;
    }
    s->data[2 * s->n] = sent;
    s->data[2 * s->n + 1] = rtt;
    s->n++;
}

static void lconn_drop(struct lconn *c, int *in_flight, double now) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->busy) (*in_flight)--;
    c->busy = 0;
    c->retry_at = now + RETRY_S;
}

static int lconn_send(struct lconn *c, int index, unsigned char **lines, int line_bytes,
                      int *in_flight) {
    c->tx = c->rx = 0;
    c->sent = now_s();
    c->busy = 1;
    (*in_flight)++;
    return send_some(c->fd, index, lines[index % PATTERNS], (size_t)line_bytes, &c->tx,
                     &c->want_out);
}

static int lconn_open(struct lconn *c, int index, const struct sockaddr_in *addr) {
    char why[200];
    int fd = connect_blocking(addr, why, sizeof why);
    if (fd < 0) {
        conn_failed(&failures.connect, index, why);
        c->retry_at = now_s() + RETRY_S;
        return -1;
    }
    c->fd = fd;
    c->want_out = 0;
    watch(fd, EPOLL_CTL_ADD, index, 0);
    return 0;
}

static int run_latency(const struct sockaddr_in *addr, int nconn, int line_bytes, double warmup,
                       double measure, const char *samples_path) {
    unsigned char *lines[PATTERNS];
    for (int k = 0; k < PATTERNS; k++) lines[k] = make_line(k, line_bytes);
    struct lconn *conns = calloc((size_t)nconn, sizeof *conns);
    struct samples all = {0};
    int opened = 0, in_flight = 0;
    for (int i = 0; i < nconn; i++) conns[i].fd = -1;
    for (int i = 0; i < nconn && !error_text[0]; i++)
        if (lconn_open(&conns[i], i, addr) == 0) opened++;

    struct phases ph;
    phases_start(&ph, warmup, measure);
    double last_progress = now_s(), max_gap = 0;
    for (int i = 0; i < nconn && !error_text[0]; i++) {
        struct lconn *c = &conns[i];
        if (c->fd >= 0 && lconn_send(c, i, lines, line_bytes, &in_flight) < 0) {
            conn_failed(&failures.io, i, strerror(errno));
            lconn_drop(c, &in_flight, now_s());
        }
    }

    static unsigned char buf[1 << 16];
    struct epoll_event events[256];
    while (!error_text[0]) {
        double now = now_s();
        phases_update(&ph, now);
        if (ph.phase == 2 && (in_flight == 0 || now >= ph.drain_deadline)) break;
        if (now - last_progress > max_gap) max_gap = now - last_progress;
        if (!tolerant && now - last_progress > STALL_S) {
            fail("%d connections: no echo for 5 s (server stalled or lost data)", in_flight);
            break;
        }
        if (now >= ph.hard_deadline) {
            fail("hard deadline passed");
            break;
        }
        if (tolerant && ph.phase < 2) { /* reconnect dropped connections */
            for (int i = 0; i < nconn; i++) {
                struct lconn *c = &conns[i];
                if (c->fd >= 0 || now < c->retry_at) continue;
                if (lconn_open(c, i, addr) == 0 &&
                    lconn_send(c, i, lines, line_bytes, &in_flight) < 0) {
                    conn_failed(&failures.io, i, strerror(errno));
                    lconn_drop(c, &in_flight, now);
                }
            }
        }
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int e = 0; e < n && !error_text[0]; e++) {
            int index = (int)events[e].data.u32;
            struct lconn *c = &conns[index];
            if (c->fd < 0) continue;
            if ((events[e].events & EPOLLOUT) &&
                send_some(c->fd, index, lines[index % PATTERNS], (size_t)line_bytes, &c->tx,
                          &c->want_out) < 0) {
                conn_failed(&failures.io, index, strerror(errno));
                lconn_drop(c, &in_flight, now);
                continue;
            }
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                conn_failed(&failures.io, index, strerror(errno));
                lconn_drop(c, &in_flight, now);
                continue;
            }
            if (got == 0) {
                conn_failed(&failures.closed, index, "closed by the server");
                lconn_drop(c, &in_flight, now);
                continue;
            }
            double received = now_s();
            last_progress = received;
            int done = match(lines[index % PATTERNS], (size_t)line_bytes, &c->rx, buf,
                             (size_t)got);
            if (done < 0 || (done == 1 && !c->busy)) {
                conn_failed(&failures.mismatch, index, "echo differs from what was sent");
                lconn_drop(c, &in_flight, now);
                continue;
            }
            if (done == 1) {
                samples_add(&all, c->sent, received - c->sent);
                c->busy = 0;
                in_flight--;
                if (ph.phase < 2 && lconn_send(c, index, lines, line_bytes, &in_flight) < 0) {
                    conn_failed(&failures.io, index, strerror(errno));
                    lconn_drop(c, &in_flight, now);
                }
            }
        }
    }
    phases_finish(&ph);
    for (int i = 0; i < nconn; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);

    /* The window's round trips: those that completed inside it. */
    double *window = malloc((size_t)(all.n ? all.n : 1) * sizeof *window);
    long counted = 0;
    for (long i = 0; i < all.n; i++) {
        double received = all.data[2 * i] + all.data[2 * i + 1];
        if (received >= ph.window_start && received < ph.window_end)
            window[counted++] = all.data[2 * i + 1];
    }
    if (samples_path != NULL) {
        FILE *f = fopen(samples_path, "wb");
        if (f == NULL || fwrite(all.data, 2 * sizeof(double), (size_t)all.n, f) != (size_t)all.n)
            fail("cannot write %s: %s", samples_path, strerror(errno));
        if (f != NULL) fclose(f);
    }
    printf("{\"impl\": \"c\", \"mode\": \"latency\", \"connections\": %d, \"opened\": %d, "
           "\"line_bytes\": %d, \"samples_total\": %ld, \"samples_dropped\": %s, ",
           nconn, opened, line_bytes, all.n, all.n >= MAX_SAMPLES ? "true" : "false");
    print_percentiles("latency_us", window, counted);
    print_tail(&ph, counted, max_gap);
    return error_text[0] ? 1 : 0;
}

/* ---- churn mode ------------------------------------------------------------------ */

enum { IDLE, CONNECTING, ECHOING };

struct cconn {
    int fd;
    int state;
    size_t tx, rx;
    int want_out;
    double started;
};

static void cconn_drop(struct cconn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = IDLE;
}

/* Start a connection in slot `index`: non-blocking connect, then the line. */
static void cconn_start(struct cconn *c, int index, const struct sockaddr_in *addr,
                        const unsigned char *line, size_t len) {
    c->tx = c->rx = 0;
    c->want_out = 0;
    c->started = now_s();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        conn_failed(&failures.connect, index, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0) {
        c->state = ECHOING;
        watch(fd, EPOLL_CTL_ADD, index, 0);
        if (send_some(fd, index, line, len, &c->tx, &c->want_out) < 0) {
            conn_failed(&failures.io, index, strerror(errno));
            cconn_drop(c);
        }
    } else if (errno == EINPROGRESS) {
        c->state = CONNECTING;
        watch(fd, EPOLL_CTL_ADD, index, 1);
        c->want_out = 1;
    } else {
        char why[200];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        conn_failed(&failures.connect, index, why);
        cconn_drop(c);
    }
}

static int run_churn(const struct sockaddr_in *addr, int slots, int line_bytes, double warmup,
                     double measure) {
    unsigned char *lines[PATTERNS];
    for (int k = 0; k < PATTERNS; k++) lines[k] = make_line(k, line_bytes);
    size_t len = (size_t)line_bytes;
    struct cconn *conns = calloc((size_t)slots, sizeof *conns);
    double *times = NULL;
    long times_n = 0, times_cap = 0, completed = 0;
    long long counted = 0;

    struct phases ph;
    phases_start(&ph, warmup, measure);
    double last_progress = now_s(), max_gap = 0;
    for (int i = 0; i < slots; i++) {
        conns[i].fd = -1;
        cconn_start(&conns[i], i, addr, lines[i % PATTERNS], len);
    }

    static unsigned char buf[1 << 16];
    struct epoll_event events[256];
    while (!error_text[0]) {
        double now = now_s();
        phases_update(&ph, now);
        int active = 0;
        for (int i = 0; i < slots; i++) {
            struct cconn *c = &conns[i];
            if (c->state != IDLE && now - c->started > CONN_TIMEOUT_S) {
                conn_failed(&failures.timeout, i,
                            c->state == CONNECTING ? "connect timed out" : "no echo in 5 s");
                cconn_drop(c);
            }
            if (c->state == IDLE && ph.phase < 2 && !error_text[0])
                cconn_start(c, i, addr, lines[i % PATTERNS], len);
            active += c->state != IDLE;
        }
        if (ph.phase == 2 && (active == 0 || now >= ph.drain_deadline)) break;
        if (now - last_progress > max_gap) max_gap = now - last_progress;
        if (!tolerant && now - last_progress > STALL_S) {
            fail("%d connections: none completed for 5 s (server stalled?)", active);
            break;
        }
        if (now >= ph.hard_deadline) {
            fail("hard deadline passed");
            break;
        }
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int e = 0; e < n && !error_text[0]; e++) {
            int index = (int)events[e].data.u32;
            struct cconn *c = &conns[index];
            const unsigned char *line = lines[index % PATTERNS];
            unsigned ev = events[e].events;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t elen = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
                if (err != 0) {
                    char why[200];
                    snprintf(why, sizeof why, "connect: %s", strerror(err));
                    conn_failed(&failures.connect, index, why);
                    cconn_drop(c);
                    continue;
                }
                if (!(ev & EPOLLOUT)) continue;
                c->state = ECHOING;
            }
            if (c->state != ECHOING) continue;
            if ((ev & EPOLLOUT) && send_some(c->fd, index, line, len, &c->tx, &c->want_out) < 0) {
                conn_failed(&failures.io, index, strerror(errno));
                cconn_drop(c);
                continue;
            }
            if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                conn_failed(&failures.io, index, strerror(errno));
                cconn_drop(c);
                continue;
            }
            if (got == 0) {
                conn_failed(&failures.closed, index, "closed by the server before the echo");
                cconn_drop(c);
                continue;
            }
            int done = match(line, len, &c->rx, buf, (size_t)got);
            if (done < 0) {
                conn_failed(&failures.mismatch, index, "echo differs from what was sent");
                cconn_drop(c);
                continue;
            }
            if (done == 1) {
                double finished = now_s();
                last_progress = finished;
                completed++;
                if (ph.phase == 1) {
                    counted++;
                    if (times_n == times_cap && times_cap < MAX_SAMPLES) {
                        long cap = times_cap ? times_cap * 2 : 65536;
                        double *grown = realloc(times, (size_t)cap * sizeof *times);
                        if (grown != NULL) {
                            times = grown;
                            times_cap = cap;
                        }
                    }
                    if (times_n < times_cap) times[times_n++] = finished - c->started;
                }
                cconn_drop(c); /* close: the client closes first */
                if (ph.phase < 2) cconn_start(c, index, addr, line, len);
            }
        }
    }
    phases_finish(&ph);
    for (int i = 0; i < slots; i++) cconn_drop(&conns[i]);
    printf("{\"impl\": \"c\", \"mode\": \"churn\", \"connections\": %d, \"line_bytes\": %d, "
           "\"completed_total\": %ld, ",
           slots, line_bytes, completed);
    print_percentiles("connection_us", times, times_n);
    print_tail(&ph, counted, max_gap);
    return error_text[0] ? 1 : 0;
}

/* ---- stream mode ----------------------------------------------------------------- */

struct sconn {
    int fd;
    int want_out;
    size_t rx;          /* bytes of the line now being echoed */
    size_t tx_off;      /* offset in the line of the next byte to send */
    size_t pending;     /* bytes queued, not yet written */
    long long queued;   /* lines queued (written or to write) */
    long long echoed;   /* lines echoed back */
    double *sent;       /* a ring of DEPTH: when each line in flight was queued */
};

/* Match data against an endless repetition of `line` from offset *rx (a "\r" before
 * a "\n" is accepted). Returns the number of lines completed, or -1 on a mismatch. */
static long match_repeated(const unsigned char *line, size_t len, size_t *rx,
                           const unsigned char *data, size_t n) {
    long done = 0;
    size_t i = 0;
    while (i < n) {
        size_t k = n - i;
        if (k > len - *rx) k = len - *rx;
        if (memcmp(data + i, line + *rx, k) == 0) { /* fast path */
            *rx += k;
            i += k;
        } else if (data[i] == line[*rx]) {
            (*rx)++;
            i++;
        } else if (data[i] == '\r' && line[*rx] == '\n') {
            i++;
        } else {
            return -1;
        }
        if (*rx == len) {
            *rx = 0;
            done++;
        }
    }
    return done;
}

/* Write what is queued, as far as the socket takes it. 0, or -1 on error (errno). */
static int sconn_flush(struct sconn *c, int index, const unsigned char *rep, size_t len) {
    while (c->pending > 0) {
        ssize_t n = send(c->fd, rep + c->tx_off, c->pending, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        c->pending -= (size_t)n;
        c->tx_off = (c->tx_off + (size_t)n) % len;
    }
    int want = c->pending > 0;
    if (want != c->want_out) {
        if (watch(c->fd, EPOLL_CTL_MOD, index, want) < 0) return -1;
        c->want_out = want;
    }
    return 0;
}

/* Queue `k` more lines (their send time: now) and write what the socket takes. */
static int sconn_queue(struct sconn *c, int index, long k, int depth, const unsigned char *rep,
                       size_t len, double now, long long *in_flight) {
    for (long j = 0; j < k; j++) c->sent[(c->queued + j) % depth] = now;
    c->queued += k;
    c->pending += (size_t)k * len;
    *in_flight += k;
    return sconn_flush(c, index, rep, len);
}

static int run_stream(const struct sockaddr_in *addr, int nconn, int depth, int line_bytes,
                      double warmup, double measure) {
    size_t len = (size_t)line_bytes;
    /* Per pattern, depth + 1 copies of its line: any `pending` (at most depth lines)
     * starting at any offset of the line is one contiguous slice. */
    unsigned char *reps[PATTERNS];
    for (int k = 0; k < PATTERNS; k++) {
        unsigned char *line = make_line(k, line_bytes);
        reps[k] = malloc((size_t)(depth + 1) * len);
        for (int j = 0; j <= depth; j++) memcpy(reps[k] + (size_t)j * len, line, len);
        free(line);
    }
    struct sconn *conns = calloc((size_t)nconn, sizeof *conns);
    double *rings = calloc((size_t)nconn * (size_t)depth, sizeof *rings);
    double *times = NULL;
    long times_n = 0, times_cap = 0;
    long long counted = 0, recvs = 0, in_flight = 0;
    int opened = 0;
    char why[200];
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = -1;
        conns[i].sent = rings + (size_t)i * (size_t)depth;
    }
    for (int i = 0; i < nconn && !error_text[0]; i++) {
        int fd = connect_blocking(addr, why, sizeof why);
        if (fd < 0) {
            fail("connection %d: %s", i, why);
            break;
        }
        conns[i].fd = fd;
        opened++;
        watch(fd, EPOLL_CTL_ADD, i, 0);
    }

    struct phases ph;
    phases_start(&ph, warmup, measure);
    double last_progress = now_s(), max_gap = 0;
    for (int i = 0; i < opened && !error_text[0]; i++)
        if (sconn_queue(&conns[i], i, depth, depth, reps[i % PATTERNS], len, now_s(),
                        &in_flight) < 0)
            fail("connection %d: send: %s", i, strerror(errno));

    static unsigned char buf[1 << 16];
    struct epoll_event events[256];
    while (!error_text[0]) {
        double now = now_s();
        phases_update(&ph, now);
        if (ph.phase == 2 && (in_flight == 0 || now >= ph.drain_deadline)) break;
        if (now - last_progress > max_gap) max_gap = now - last_progress;
        if (now - last_progress > STALL_S) {
            fail("%lld lines in flight: no echo for 5 s (server stalled or lost data)", in_flight);
            break;
        }
        if (now >= ph.hard_deadline) {
            fail("hard deadline passed");
            break;
        }
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int e = 0; e < n && !error_text[0]; e++) {
            int index = (int)events[e].data.u32;
            struct sconn *c = &conns[index];
            const unsigned char *rep = reps[index % PATTERNS];
            if ((events[e].events & EPOLLOUT) && sconn_flush(c, index, rep, len) < 0) {
                fail("connection %d: send: %s", index, strerror(errno));
                break;
            }
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                fail("connection %d: recv: %s", index, strerror(errno));
                break;
            }
            if (got == 0) {
                fail("connection %d: closed by the server", index);
                break;
            }
            double received = now_s();
            last_progress = received;
            if (ph.phase == 1) recvs++;
            long done = match_repeated(rep, len, &c->rx, buf, (size_t)got);
            long long written = c->queued * (long long)len - (long long)c->pending;
            if (done < 0 || (c->echoed + done) * (long long)len + (long long)c->rx > written) {
                fail("connection %d: echo differs from what was sent", index);
                break;
            }
            for (long j = 0; j < done; j++) {
                double rtt = received - c->sent[c->echoed % depth];
                c->echoed++;
                in_flight--;
                if (ph.phase != 1) continue;
                counted++;
                if (times_n == times_cap && times_cap < MAX_SAMPLES) {
                    long cap = times_cap ? times_cap * 2 : 65536;
                    double *grown = realloc(times, (size_t)cap * sizeof *times);
                    if (grown != NULL) {
                        times = grown;
                        times_cap = cap;
                    }
                }
                if (times_n < times_cap) times[times_n++] = rtt;
            }
            /* The echoes this read completed are answered with one write of as many
             * new lines: the window stays at DEPTH lines in flight. */
            if (done > 0 && ph.phase < 2 &&
                sconn_queue(c, index, done, depth, rep, len, received, &in_flight) < 0) {
                fail("connection %d: send: %s", index, strerror(errno));
                break;
            }
        }
    }
    phases_finish(&ph);
    for (int i = 0; i < nconn; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    printf("{\"impl\": \"c\", \"mode\": \"stream\", \"connections\": %d, \"opened\": %d, "
           "\"depth\": %d, \"line_bytes\": %d, \"recvs\": %lld, \"unfinished_lines\": %lld, ",
           nconn, opened, depth, line_bytes, recvs, in_flight);
    print_percentiles("latency_us", times, times_n);
    print_tail(&ph, counted, max_gap);
    return error_text[0] ? 1 : 0;
}

/* ---- arguments ------------------------------------------------------------------- */

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [throughput] HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S\n"
            "       %s latency HOST PORT CONNECTIONS LINE_BYTES WARMUP_S MEASURE_S "
            "[--tolerant] [--samples FILE]\n"
            "       %s churn HOST PORT CONCURRENCY LINE_BYTES WARMUP_S MEASURE_S [--tolerant]\n"
            "       %s stream HOST PORT CONNECTIONS DEPTH LINE_BYTES WARMUP_S MEASURE_S\n",
            prog, prog, prog, prog);
}

int main(int argc, char **argv) {
    const char *prog = argv[0];
    const char *mode = "throughput";
    if (argc > 1 && (strcmp(argv[1], "throughput") == 0 || strcmp(argv[1], "latency") == 0 ||
                     strcmp(argv[1], "churn") == 0 || strcmp(argv[1], "stream") == 0)) {
        mode = argv[1];
        argv++;
        argc--;
    }
    int is_throughput = strcmp(mode, "throughput") == 0;
    int is_stream = strcmp(mode, "stream") == 0;
    int positional = is_throughput || is_stream ? 7 : 6;
    if (argc < positional + 1) {
        usage(prog);
        return 2;
    }
    const char *samples_path = NULL;
    for (int i = positional + 1; i < argc; i++) {
        if (strcmp(argv[i], "--tolerant") == 0 && !is_stream) {
            tolerant = 1;
        } else if (strcmp(argv[i], "--samples") == 0 && i + 1 < argc &&
                   strcmp(mode, "latency") == 0) {
            samples_path = argv[++i];
        } else {
            usage(prog);
            return 2;
        }
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int nconn = atoi(argv[3]);
    int lines = is_throughput || is_stream ? atoi(argv[4]) : 1; /* stream: DEPTH */
    int line_bytes = atoi(argv[positional - 2]);
    double warmup = atof(argv[positional - 1]);
    double measure = atof(argv[positional]);
    if (port <= 0 || port > 65535 || nconn < 1 || nconn > MAX_CONNECTIONS || lines < 1 ||
        line_bytes < 2 || (long)lines * line_bytes > MAX_BATCH_BYTES || warmup < 0 ||
        measure <= 0) {
        fprintf(stderr, "loadgen: argument out of range\n");
        return 2;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: %s is not an IPv4 address\n", host);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigaction(SIGUSR1, &sa, NULL);
    epfd = epoll_create1(0);
    if (is_throughput) return run_throughput(&addr, nconn, lines, line_bytes, warmup, measure);
    if (is_stream) return run_stream(&addr, nconn, lines, line_bytes, warmup, measure);
    if (strcmp(mode, "latency") == 0)
        return run_latency(&addr, nconn, line_bytes, warmup, measure, samples_path);
    return run_churn(&addr, nconn, line_bytes, warmup, measure);
}
