/* A fast LocalAPI stand-in for the relay benchmark: an HTTP/1.1 responder on a
 * Unix socket, one detached thread (64 KiB stack) per connection, one request
 * per connection, answered and then closed (`Connection: close`).
 *
 *   GET /localapi/v0/status   a small fixed JSON answer
 *   PUT <any path>            reads and discards a Content-Length body,
 *                             answers with the byte count it received
 *   GET /download?bytes=N     answers with N bytes
 *   GET /stats                {"open":K}: connections open right now (the
 *                             benchmark polls it to know that idle connections
 *                             made it through the whole chain)
 *
 * A connection that sends nothing just waits (for the idle-connection test)
 * until its peer closes.  Usage: upstream SOCKET_PATH
 * Built by bench/relay_bench.py with gcc -O2 -pthread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "io.h"

#define HEADER_MAX 8192
#define IO_CHUNK (256 * 1024)

static atomic_long open_connections;
static char payload[IO_CHUNK];

static const char STATUS_BODY[] =
    "{\"Version\":\"1.0.0-bench\",\"BackendState\":\"Running\",\"Self\":"
    "{\"HostName\":\"bench\",\"Online\":true}}\n";

static int answer(int fd, const char *status, const char *body, size_t body_len) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, body_len);
    if (write_all(fd, head, (size_t)n) < 0) return -1;
    return write_all(fd, body, body_len);
}

static long long content_length(const char *headers) {
    const char *p = headers;
    while ((p = strchr(p, '\n')) != NULL) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0) return atoll(p + 15);
    }
    return 0;
}

static void serve(int fd) {
    char buf[HEADER_MAX + 1];
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        if (have == HEADER_MAX) return;
        ssize_t n = read(fd, buf + have, HEADER_MAX - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return; /* peer gone (or an idle connection closed) */
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    *end = '\0';
    size_t body_have = have - (size_t)(end + 4 - buf);

    if (strncmp(buf, "GET /localapi/v0/status ", 24) == 0) {
        answer(fd, "200 OK", STATUS_BODY, sizeof STATUS_BODY - 1);
    } else if (strncmp(buf, "GET /stats ", 11) == 0) {
        char body[64];
        int n = snprintf(body, sizeof body, "{\"open\":%ld}\n", atomic_load(&open_connections));
        answer(fd, "200 OK", body, (size_t)n);
    } else if (strncmp(buf, "GET /download?bytes=", 20) == 0) {
        long long want = atoll(buf + 20);
        char head[256];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         "Content-Length: %lld\r\nConnection: close\r\n\r\n",
                         want);
        if (write_all(fd, head, (size_t)n) < 0) return;
        while (want > 0) {
            size_t chunk = want < IO_CHUNK ? (size_t)want : IO_CHUNK;
            if (write_all(fd, payload, chunk) < 0) return;
            want -= (long long)chunk;
        }
    } else if (strncmp(buf, "PUT ", 4) == 0) {
        long long want = content_length(buf);
        long long got = (long long)body_have;
        char sink[IO_CHUNK]; /* on the stack: pages are touched only by uploads */
        while (got < want) {
            ssize_t n = read(fd, sink, sizeof sink);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += n;
        }
        char body[64];
        int n = snprintf(body, sizeof body, "{\"received\":%lld}\n", got);
        answer(fd, got == want ? "200 OK" : "400 Bad Request", body, (size_t)n);
    } else {
        static const char nf[] = "{\"error\":\"not found\"}\n";
        answer(fd, "404 Not Found", nf, sizeof nf - 1);
    }
    /* Pass our EOF on and wait for the peer's, so the close never resets
     * an answer the peer has not read yet. */
    shutdown(fd, SHUT_WR);
    while (read(fd, buf, HEADER_MAX) > 0) {
    }
}

static void *connection_thread(void *arg) {
    int fd = (int)(long)arg;
    serve(fd);
    close(fd);
    atomic_fetch_sub(&open_connections, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    prepare_process();
    memset(payload, 'x', sizeof payload);

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    unlink(argv[1]);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("upstream: bind/listen");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024 + IO_CHUNK); /* + the PUT sink */
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                usleep(10000);
                continue;
            }
            perror("upstream: accept");
            return 1;
        }
        atomic_fetch_add(&open_connections, 1);
        pthread_t t;
        if (pthread_create(&t, &attr, connection_thread, (void *)(long)fd) != 0) {
            atomic_fetch_sub(&open_connections, 1);
            close(fd);
        }
    }
}
