/* The app both probers of tests/bench/probe_overhead.py ask: a blocking accept loop on
 * 127.0.0.1:PORT that answers every request with a fixed 200 and closes, as a health endpoint
 * behind gunicorn does. GET /count answers the number of other requests served so far (the
 * probes), without counting itself. Cheap and deterministic, so the numbers measured are the
 * prober's. Usage: probe_server PORT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: probe_server PORT\n");
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 128) != 0) {
        perror("probe_server: bind");
        return 1;
    }
    const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                      "Connection: close\r\n\r\nok\n";
    unsigned long served = 0;
    static char request[8192];
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0)
            continue;
        size_t got = 0;
        request[0] = 0;
        while (got < sizeof request - 1 && !strstr(request, "\r\n\r\n")) {
            ssize_t n = read(fd, request + got, sizeof request - 1 - got);
            if (n <= 0)
                break;
            got += n;
            request[got] = 0;
        }
        if (strncmp(request, "GET /count ", 11) == 0) {
            char reply[128];
            char body[32];
            int body_len = snprintf(body, sizeof body, "%lu\n", served);
            int len = snprintf(reply, sizeof reply,
                               "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                               body_len, body);
            (void)!write(fd, reply, len);
        } else if (got > 0) {
            served++;
            (void)!write(fd, ok, sizeof ok - 1);
        }
        close(fd);
    }
}
