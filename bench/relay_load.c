/* relay_load.c owns relay_load: the plain-TCP sender and sink of
 * bench/relay/relay-bench.sh, in C, so that the load costs its CPU the
 * same little for every peer (bench/relay/load.py is the fallback when this
 * is not built, and stays the TLS sender). Loopback only. No uvctx code.
 *
 *   relay_load sink [--timeout S]
 *       listen on 127.0.0.1:0, print "port N", take one connection, read
 *       it to EOF in 1 MiB reads and print "bytes=N seconds=S" (first byte
 *       to EOF, as load.py's sink)
 *   relay_load send PORT BYTES [--timeout S]
 *       send BYTES zeros to 127.0.0.1:PORT in 1 MiB writes and print
 *       "bytes=N seconds=S"
 *   relay_load [--quick]
 *       the self-check (CTest's smoke run): a sink thread and a sender
 *       move 64 MiB (1 MiB with --quick) between them, and every byte
 *       must arrive
 *
 * Every socket has a timeout (--timeout, 120 s: SO_RCVTIMEO/SO_SNDTIMEO,
 * and the accept waits as long), so a stuck peer ends the run with an
 * error instead of hanging it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1024 * 1024)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char* what) {
  fprintf(stderr, "relay_load: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void set_timeout(int fd, double secs) {
  struct timeval tv;
  tv.tv_sec = (time_t)secs;
  tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
    die("setsockopt");
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

/* A listening socket on 127.0.0.1:0; its port in *port. */
static int sink_listen(int* port) {
  struct sockaddr_in a = loopback(0);
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr*)&a, sizeof(a)) != 0 ||
      listen(fd, 4) != 0 || getsockname(fd, (struct sockaddr*)&a, &len) != 0)
    die("listen");
  *port = ntohs(a.sin_port);
  return fd;
}

/* Takes one connection on lfd and reads it to EOF: the bytes read, and in
 * *secs the time from the first byte to EOF. */
static uint64_t sink_run(int lfd, double timeout, double* secs) {
  struct pollfd p = {lfd, POLLIN, 0};
  char* buf = malloc(CHUNK);
  uint64_t total = 0;
  double t0 = 0;
  ssize_t n;
  int fd;
  if (buf == NULL)
    die("malloc");
  if (poll(&p, 1, (int)(timeout * 1000)) != 1) {
    errno = ETIMEDOUT;
    die("accept");
  }
  fd = accept(lfd, NULL, NULL);
  if (fd < 0)
    die("accept");
  close(lfd);
  set_timeout(fd, timeout);
  for (;;) {
    n = read(fd, buf, CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      die("read");
    if (n == 0)
      break;
    if (total == 0)
      t0 = now();
    total += (uint64_t)n;
  }
  *secs = total > 0 ? now() - t0 : 0.0;
  close(fd);
  free(buf);
  return total;
}

/* Sends `bytes` zeros to 127.0.0.1:port; the time it took in *secs. */
static void send_run(int port, uint64_t bytes, double timeout, double* secs) {
  struct sockaddr_in a = loopback(port);
  char* buf = calloc(1, CHUNK);
  uint64_t left = bytes;
  size_t off;
  ssize_t n;
  double t0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (buf == NULL || fd < 0)
    die("socket");
  set_timeout(fd, timeout);
  if (connect(fd, (struct sockaddr*)&a, sizeof(a)) != 0)
    die("connect");
  t0 = now();
  while (left > 0) {
    size_t want = left < CHUNK ? (size_t)left : CHUNK;
    for (off = 0; off < want; off += (size_t)n) {
      n = write(fd, buf + off, want - off);
      if (n < 0 && errno == EINTR) {
        n = 0;
        continue;
      }
      if (n <= 0)
        die("write");
    }
    left -= want;
  }
  *secs = now() - t0;
  close(fd);
  free(buf);
}

typedef struct {
  int lfd;
  uint64_t got;
  double secs;
} check_t;

static void* check_sink(void* arg) {
  check_t* c = arg;
  c->got = sink_run(c->lfd, 120, &c->secs);
  return NULL;
}

static int self_check(uint64_t bytes) {
  check_t c;
  pthread_t t;
  double secs;
  int port;
  c.lfd = sink_listen(&port);
  if (pthread_create(&t, NULL, check_sink, &c) != 0)
    die("pthread_create");
  send_run(port, bytes, 120, &secs);
  pthread_join(t, NULL);
  if (c.got != bytes) {
    fprintf(stderr, "relay_load: the sink got %llu of %llu bytes\n",
            (unsigned long long)c.got, (unsigned long long)bytes);
    return 1;
  }
  printf("relay_load: self-check: %llu bytes\n", (unsigned long long)bytes);
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: relay_load sink [--timeout S]\n"
                  "       relay_load send PORT BYTES [--timeout S]\n"
                  "       relay_load [--quick]\n");
  return 2;
}

int main(int argc, char** argv) {
  double timeout = 120;
  double secs;
  uint64_t got;
  int nargs = argc;
  int port;
  int lfd;
  char* end;
  if (argc >= 2 && strcmp(argv[argc - 2], "--timeout") == 0) {
    timeout = strtod(argv[argc - 1], &end);
    if (*end != '\0' || !(timeout > 0))
      return usage();
    nargs -= 2;
  }
  if (nargs == 1)
    return self_check(64u * CHUNK);
  if (nargs == 2 && strcmp(argv[1], "--quick") == 0)
    return self_check(CHUNK);
  if (nargs == 2 && strcmp(argv[1], "sink") == 0) {
    lfd = sink_listen(&port);
    printf("port %d\n", port);
    fflush(stdout);
    got = sink_run(lfd, timeout, &secs);
    printf("bytes=%llu seconds=%.6f\n", (unsigned long long)got, secs);
    return 0;
  }
  if (nargs == 4 && strcmp(argv[1], "send") == 0) {
    port = (int)strtol(argv[2], &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
      return usage();
    got = strtoull(argv[3], &end, 10);
    if (*end != '\0')
      return usage();
    send_run(port, got, timeout, &secs);
    printf("bytes=%llu seconds=%.6f\n", (unsigned long long)got, secs);
    return 0;
  }
  return usage();
}
