/* The floor for an HTTP health probe: a bare blocking loop that does what keepwell's probe
 * does and nothing more. Every INTERVAL_MS, from the end of one probe to the start of the next
 * (keepwell's --health-interval): socket, connect, write the GET, read the response head
 * (until the blank line, at most 64 KiB, as keepwell reads), close, sleep. Six system calls
 * per probe when the head comes in one read. No timeout, no redirects, no parsing beyond the
 * status line: it is the floor, not a rival.
 *
 * Built and run by tests/bench/probe_overhead.py: probe_loop PORT PATH INTERVAL_MS */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: probe_loop PORT PATH INTERVAL_MS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long interval_ms = atol(argv[3]);
    char request[512];
    int request_len = snprintf(request, sizeof request,
                               "GET %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nuser-agent: loop\r\n\r\n",
                               argv[2], port);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timespec pause = {.tv_sec = interval_ms / 1000,
                             .tv_nsec = (interval_ms % 1000) * 1000000L};
    static char head[64 * 1024];
    unsigned long failures = 0;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = 0;
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
            write(fd, request, request_len) == request_len) {
            size_t got = 0;
            for (;;) {
                ssize_t n = read(fd, head + got, sizeof head - 1 - got);
                if (n <= 0)
                    break;
                got += n;
                head[got] = 0;
                if (strstr(head, "\r\n\r\n") || got == sizeof head - 1)
                    break;
            }
            ok = got > 12 && memcmp(head, "HTTP/1.1 2", 10) == 0;
        }
        if (fd >= 0)
            close(fd);
        if (!ok && ++failures % 100 == 1)
            fprintf(stderr, "probe_loop: probe failed (%lu so far)\n", failures);
        nanosleep(&pause, NULL);
    }
}
