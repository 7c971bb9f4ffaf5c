/*
 * The load generator for the throughput scenario: a small epoll client.
 *
 *   loadgen HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S
 *
 * Opens CONNECTIONS connections to HOST:PORT (IPv4 only; the harness passes
 * 127.0.0.1). Each connection sends a batch of LINES pipelined lines of
 * LINE_BYTES bytes (LINE_BYTES - 1 printable characters and "\n") in one write,
 * waits until every line has come back, then sends the batch again. Echoes are
 * checked byte for byte; a "\r" before a "\n" is accepted (POE's line filter
 * ends its lines with "\r\n").
 *
 * Phases: WARMUP_S seconds of traffic that is not counted, MEASURE_S seconds that
 * are, then a drain (no new batches; wait up to 2 s for those in flight). Only
 * batches completed inside the measuring window count.
 *
 * Output: one JSON object on stdout (also on failure, with "error" set); exit
 * status 0 on success, 1 on failure, 2 on bad arguments. Every wait is bounded:
 * connect, stalls (5 s without any progress), and a hard deadline.
 *
 * benchmarks/loadgen.py compiles this file with `cc -O2` and holds a pure-Python
 * fallback with the same arguments, behaviour and output: keep the two in step.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#define STALL_S 5.0
#define DRAIN_S 2.0
#define HARD_EXTRA_S 15.0
#define CONNECT_TIMEOUT_S 5

struct conn {
    int fd;
    size_t tx;       /* bytes of the batch written so far */
    size_t rx;       /* bytes of the expected batch matched so far */
    int in_flight;   /* a batch has been sent and not fully echoed */
    int want_out;    /* registered for EPOLLOUT (a partial write is pending) */
};

static unsigned char *batch;
static size_t batch_len;
static struct conn *conns;
static int epfd = -1;
static char error_text[512];

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

static void fail(const char *fmt, const char *detail, int index) {
    if (error_text[0] == '\0') {
        snprintf(error_text, sizeof error_text, fmt, index, detail);
    }
}

/* Line i, character j: printable, and different from line to line. */
static void make_batch(int lines, int line_bytes) {
    batch_len = (size_t)lines * (size_t)line_bytes;
    batch = malloc(batch_len);
    for (int i = 0; i < lines; i++) {
        for (int j = 0; j < line_bytes - 1; j++) {
            batch[(size_t)i * line_bytes + j] = (unsigned char)('a' + (i + j) % 26);
        }
        batch[(size_t)i * line_bytes + line_bytes - 1] = '\n';
    }
}

static int set_events(struct conn *c, int index, int want_out) {
    struct epoll_event ev;
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.u32 = (unsigned)index;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        fail("connection %d: epoll_ctl: %s", strerror(errno), index);
        return -1;
    }
    c->want_out = want_out;
    return 0;
}

/* Write what is left of the current batch; 0 on success (maybe partial), -1 on error. */
static int send_rest(struct conn *c, int index) {
    while (c->tx < batch_len) {
        ssize_t n = send(c->fd, batch + c->tx, batch_len - c->tx, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            fail("connection %d: send: %s", strerror(errno), index);
            return -1;
        }
        c->tx += (size_t)n;
    }
    int want_out = c->tx < batch_len;
    if (want_out != c->want_out) return set_events(c, index, want_out);
    return 0;
}

static int start_batch(struct conn *c, int index) {
    c->tx = 0;
    c->rx = 0;
    c->in_flight = 1;
    return send_rest(c, index);
}

/* Match received bytes against the batch; returns 1 when the batch completes,
 * 0 if more is expected, -1 on a mismatch or on bytes past the batch's end. */
static int match(struct conn *c, int index, const unsigned char *data, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (c->rx == batch_len) {
            fail("connection %d: %s", "received bytes that were never sent", index);
            return -1;
        }
        /* Fast path: the rest of the chunk is exactly what comes next. */
        size_t n = len - i;
        if (n > batch_len - c->rx) n = batch_len - c->rx;
        if (memcmp(data + i, batch + c->rx, n) == 0) {
            c->rx += n;
            i += n;
            continue;
        }
        /* Slow path, byte by byte: tolerate "\r" before an expected "\n". */
        for (; i < len && c->rx < batch_len; i++) {
            if (data[i] == batch[c->rx]) {
                c->rx++;
            } else if (data[i] == '\r' && batch[c->rx] == '\n') {
                continue;
            } else {
                fail("connection %d: %s", "echo differs from what was sent", index);
                return -1;
            }
        }
    }
    return c->rx == batch_len;
}

static int connect_one(const struct sockaddr_in *addr, int index) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        fail("connection %d: socket: %s", strerror(errno), index);
        return -1;
    }
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        fail("connection %d: connect: %s", strerror(errno), index);
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr,
                "usage: %s HOST PORT CONNECTIONS LINES LINE_BYTES WARMUP_S MEASURE_S\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int nconn = atoi(argv[3]);
    int lines = atoi(argv[4]);
    int line_bytes = atoi(argv[5]);
    double warmup = atof(argv[6]);
    double measure = atof(argv[7]);
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

    make_batch(lines, line_bytes);
    conns = calloc((size_t)nconn, sizeof *conns);
    for (int i = 0; i < nconn; i++) conns[i].fd = -1;
    epfd = epoll_create1(0);

    long long counted_batches = 0;
    double window_start = 0, window_end = 0, cpu_start = 0, cpu_end = 0;
    int opened = 0;

    for (int i = 0; i < nconn && !error_text[0]; i++) {
        int fd = connect_one(&addr, i);
        if (fd < 0) break;
        conns[i].fd = fd;
        opened++;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    }

    double t0 = now_s();
    double warm_end = t0 + warmup;
    double measure_end = warm_end + measure;
    double hard_deadline = measure_end + HARD_EXTRA_S;
    double last_progress = t0;
    double drain_deadline = 0;
    /* 0 = warm-up, 1 = measuring, 2 = draining */
    int phase = 0;

    for (int i = 0; i < nconn && !error_text[0]; i++) start_batch(&conns[i], i);

    static unsigned char buf[1 << 16];
    struct epoll_event events[256];
    int in_flight = nconn;

    while (!error_text[0]) {
        double now = now_s();
        if (phase == 0 && now >= warm_end) {
            phase = 1;
            window_start = now;
            cpu_start = cpu_s();
        }
        if (phase == 1 && now >= measure_end) {
            phase = 2;
            window_end = now;
            cpu_end = cpu_s();
            drain_deadline = now + DRAIN_S;
        }
        if (phase == 2 && (in_flight == 0 || now >= drain_deadline)) break;
        if (now - last_progress > STALL_S) {
            fail("%d connections: %s", "no echo for 5 s (server stalled or lost data)",
                 in_flight);
            break;
        }
        if (now >= hard_deadline) {
            fail("%d: %s", "hard deadline passed", 0);
            break;
        }

        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("%d: epoll_wait: %s", strerror(errno), 0);
            break;
        }
        for (int e = 0; e < n && !error_text[0]; e++) {
            int index = (int)events[e].data.u32;
            struct conn *c = &conns[index];
            if (events[e].events & EPOLLOUT) {
                if (send_rest(c, index) < 0) break;
            }
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                fail("connection %d: recv: %s", strerror(errno), index);
                break;
            }
            if (got == 0) {
                fail("connection %d: %s", "closed by the server", index);
                break;
            }
            last_progress = now;
            int done = match(c, index, buf, (size_t)got);
            if (done < 0) break;
            if (done == 1) {
                c->in_flight = 0;
                in_flight--;
                if (phase == 1) counted_batches++;
                if (phase < 2) {
                    if (start_batch(c, index) < 0) break;
                    in_flight++;
                }
            }
        }
    }
    if (phase < 2) { /* stopped early by an error */
        window_end = now_s();
        cpu_end = cpu_s();
        if (phase == 0) window_start = window_end;
    }

    for (int i = 0; i < nconn; i++) {
        if (conns[i].fd >= 0) close(conns[i].fd);
    }
    double window = window_end - window_start;
    printf("{\"impl\": \"c\", \"connections\": %d, \"opened\": %d, \"lines_per_batch\": %d, "
           "\"line_bytes\": %d, \"warmup_s\": %.3f, \"window_s\": %.6f, \"lines\": %lld, "
           "\"window_cpu_s\": %.6f, \"unfinished_batches\": %d, \"error\": ",
           nconn, opened, lines, line_bytes, warmup, window, counted_batches * lines,
           cpu_end - cpu_start, in_flight);
    if (error_text[0]) {
        putchar('"');
        for (const char *p = error_text; *p; p++) {
            if (*p == '"' || *p == '\\') putchar('\\');
            putchar(*p);
        }
        puts("\"}");
    } else {
        puts("null}");
    }
    return error_text[0] ? 1 : 0;
}
