/* The load client of the relay benchmark: plain blocking sockets, no
 * allocation on the request path, so that its own cost is small next to the
 * relays it measures.  Every mode prints one JSON object on stdout.
 *
 *   loadgen latency  SOCK N          N sequential requests, each on a new
 *                                    connection: connect, GET status, read
 *                                    the answer (Content-Length), close
 *   loadgen rate     SOCK CLIENTS S  CLIENTS threads doing the same in a loop
 *                                    for S seconds
 *   loadgen upload   SOCK BYTES      one PUT with a BYTES body
 *   loadgen download SOCK BYTES      one GET /download?bytes=BYTES
 *   loadgen hold     SOCK N          open N connections, send the first line
 *                                    of a request (the relays open their
 *                                    upstream only once a client speaks),
 *                                    print, then keep them until stdin closes
 *
 * Latencies are reported in microseconds, throughput in MB/s (10^6 bytes).
 * Built by bench/relay_bench.py with gcc -O2 -pthread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "io.h"

#define IO_CHUNK (256 * 1024)
#define HEADER_MAX 8192

static const char STATUS_REQUEST[] =
    "GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
    "User-Agent: relay-bench\r\nConnection: close\r\n\r\n";

static const char HOLD_REQUEST_LINE[] = "GET /localapi/v0/watch-ipn-bus HTTP/1.1\r\n";

static struct sockaddr_un target;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_connection(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    while (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) {
        if (errno == EINTR) continue;
        close(fd);
        return -1;
    }
    return fd;
}

/* Read one answer: headers, then Content-Length bytes of body (or to EOF when
 * there is none).  Returns the body length, or -1 unless the status is 200. */
static long long read_answer(int fd, char *buf, size_t cap) {
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        if (have == HEADER_MAX) return -1;
        ssize_t n = read(fd, buf + have, HEADER_MAX - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0) return -1;
    long long want = -1;
    for (const char *p = buf; (p = strchr(p, '\n')) != NULL && p < end;) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0) want = atoll(p + 15);
    }
    long long got = (long long)(have - (size_t)(end + 4 - buf));
    while (want < 0 || got < want) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        got += n;
    }
    return (want < 0 || got == want) ? got : -1;
}

/* One request on a new connection; returns its latency in us, or -1. */
static double one_request(char *buf, size_t cap) {
    double start = now();
    int fd = open_connection();
    if (fd < 0) return -1;
    int ok = write_all(fd, STATUS_REQUEST, sizeof STATUS_REQUEST - 1) == 0 &&
             read_answer(fd, buf, cap) > 0;
    close(fd);
    return ok ? (now() - start) * 1e6 : -1;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, long n, double p) {
    if (n == 0) return 0;
    long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    return sorted[i];
}

static void print_latencies(double *lat, long n) {
    qsort(lat, (size_t)n, sizeof *lat, compare_doubles);
    double sum = 0;
    for (long i = 0; i < n; i++) sum += lat[i];
    printf("\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f",
           percentile(lat, n, 50), percentile(lat, n, 90), percentile(lat, n, 99),
           n ? lat[n - 1] : 0.0, n ? sum / (double)n : 0.0);
}

static int mode_latency(long count) {
    static char buf[HEADER_MAX + 1];
    double *lat = malloc(sizeof *lat * (size_t)count);
    long n = 0, errors = 0;
    for (long i = 0; i < count; i++) {
        double us = one_request(buf, HEADER_MAX);
        if (us < 0)
            errors++;
        else
            lat[n++] = us;
    }
    printf("{\"requests\":%ld,\"errors\":%ld,", n, errors);
    print_latencies(lat, n);
    printf("}\n");
    return errors ? 1 : 0;
}

struct worker {
    pthread_t thread;
    double deadline;
    double *lat;
    long n, cap, errors;
};

static pthread_barrier_t start_line;

static void *rate_worker(void *arg) {
    struct worker *w = arg;
    char buf[HEADER_MAX + 1];
    pthread_barrier_wait(&start_line);
    while (now() < w->deadline) {
        double us = one_request(buf, HEADER_MAX);
        if (us < 0) {
            w->errors++;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat = realloc(w->lat, sizeof *w->lat * (size_t)w->cap);
        }
        w->lat[w->n++] = us;
    }
    return NULL;
}

static int mode_rate(int clients, double seconds) {
    struct worker *workers = calloc((size_t)clients, sizeof *workers);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_barrier_init(&start_line, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        if (pthread_create(&workers[i].thread, &attr, rate_worker, &workers[i]) != 0) {
            perror("loadgen: pthread_create");
            return 1;
        }
    }
    double start = now();
    for (int i = 0; i < clients; i++) workers[i].deadline = start + seconds;
    pthread_barrier_wait(&start_line);
    long total = 0, errors = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(workers[i].thread, NULL);
        total += workers[i].n;
        errors += workers[i].errors;
    }
    double elapsed = now() - start;
    double *lat = malloc(sizeof *lat * (size_t)(total ? total : 1));
    long n = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(lat + n, workers[i].lat, sizeof *lat * (size_t)workers[i].n);
        n += workers[i].n;
    }
    printf("{\"clients\":%d,\"requests\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"rate\":%.1f,",
           clients, total, errors, elapsed, (double)total / elapsed);
    print_latencies(lat, n);
    printf("}\n");
    return 0;
}

static char io_buf[IO_CHUNK];

/* Connect and send a request head; the connection, or -1 after saying why. */
static int send_head(const char *head, int length) {
    int fd = open_connection();
    if (fd < 0) return perror("loadgen: connect"), -1;
    if (write_all(fd, head, (size_t)length) < 0) return perror("loadgen: write"), close(fd), -1;
    return fd;
}

/* One transfer's JSON line; its exit status. */
static int report_transfer(long long bytes, int ok, double start) {
    double elapsed = now() - start;
    printf("{\"bytes\":%lld,\"ok\":%s,\"seconds\":%.4f,\"mb_per_s\":%.1f}\n", bytes,
           ok ? "true" : "false", elapsed, (double)bytes / 1e6 / elapsed);
    return ok ? 0 : 1;
}

static int mode_upload(long long bytes) {
    memset(io_buf, 'u', sizeof io_buf);
    double start = now();
    char head[256];
    int n = snprintf(head, sizeof head,
                     "PUT /localapi/v0/file-put/bench HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
                     "Content-Length: %lld\r\nConnection: close\r\n\r\n",
                     bytes);
    int fd = send_head(head, n);
    if (fd < 0) return 1;
    for (long long left = bytes; left > 0;) {
        size_t chunk = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
        if (write_all(fd, io_buf, chunk) < 0) return perror("loadgen: write"), 1;
        left -= (long long)chunk;
    }
    long long answer = read_answer(fd, io_buf, sizeof io_buf - 1);
    close(fd);
    return report_transfer(bytes, answer > 0, start);
}

static int mode_download(long long bytes) {
    double start = now();
    char head[256];
    int n = snprintf(head, sizeof head,
                     "GET /download?bytes=%lld HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
                     "Connection: close\r\n\r\n",
                     bytes);
    int fd = send_head(head, n);
    if (fd < 0) return 1;
    long long got = read_answer(fd, io_buf, sizeof io_buf);
    close(fd);
    return report_transfer(got, got == bytes, start);
}

static int mode_hold(long count) {
    int *fds = malloc(sizeof *fds * (size_t)count);
    long open = 0;
    for (; open < count; open++) {
        fds[open] = open_connection();
        if (fds[open] < 0) break;
        if (write(fds[open], HOLD_REQUEST_LINE, sizeof HOLD_REQUEST_LINE - 1) < 0) break;
    }
    printf("{\"open\":%ld}\n", open);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (long i = 0; i < open; i++) close(fds[i]);
    return open == count ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s latency|rate|upload|download|hold SOCK ARGS...\n", argv[0]);
        return 2;
    }
    prepare_process();
    target.sun_family = AF_UNIX;
    strncpy(target.sun_path, argv[2], sizeof target.sun_path - 1);
    const char *mode = argv[1];
    if (strcmp(mode, "latency") == 0) return mode_latency(atol(argv[3]));
    if (strcmp(mode, "rate") == 0 && argc == 5) return mode_rate(atoi(argv[3]), atof(argv[4]));
    if (strcmp(mode, "upload") == 0) return mode_upload(atoll(argv[3]));
    if (strcmp(mode, "download") == 0) return mode_download(atoll(argv[3]));
    if (strcmp(mode, "hold") == 0) return mode_hold(atol(argv[3]));
    fprintf(stderr, "loadgen: unknown mode or arguments\n");
    return 2;
}
