/* bare_relay_main.c owns bare_relay: the bare libuv relays of relay_peers.c
 * (relay_bare(): 64 KiB recycled buffers, the copy's high/low marks; with
 * --try-write relay_bare_try(): one buffer, uv_try_write() first) as a
 * standalone listening process, so that bench/relay/relay-bench.sh can put
 * it beside uvctx-relay and socat in the same run, driven by the same
 * sender and sink. No uvctx code on purpose.
 *
 *   bare_relay --listen HOST:PORT --connect HOST:PORT [--count N]
 *              [--no-nodelay] [--try-write]
 *   bare_relay [--quick] [--self-check BYTES] [--try-write]
 *
 * With --listen it prints "listening on ADDR:PORT" (the real port for port
 * 0) as its first line on stdout, like uvctx-relay, then serves one
 * connection at a time: accept, connect upstream, relay until EOF, and
 * again, N times (--count; 0, the default, until killed). Both sockets get
 * TCP_NODELAY, as in uvctx-relay, unless --no-nodelay. It relays the
 * client-to-upstream direction only, which is what the throughput
 * benchmark measures; what the upstream sends is never read.
 *
 * Without --listen (how scripts/bench.sh and the CTest smoke run call every
 * benchmark program) it checks itself: a sender thread pushes BYTES of a
 * known pattern (64 MiB; 1 MiB with --quick) through a relayed connection
 * to a sink thread that verifies every byte. It prints no bench= line: the
 * figures are relay-bench.sh's. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "relay_peers.h"

static void die(const char* what, int err) {
  fprintf(stderr, "bare_relay: %s: %s\n", what, strerror(err));
  exit(2);
}

/* HOST:PORT, numeric: 127.0.0.1:0 or [::1]:8080. */
static int parse_addr(const char* s, struct sockaddr_storage* out) {
  char host[64];
  const char* colon = strrchr(s, ':');
  const char* h = s;
  size_t hl;
  char* end;
  long port;
  if (colon == NULL)
    return -1;
  hl = (size_t)(colon - s);
  if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
    h = s + 1;
    hl -= 2;
  }
  if (hl == 0 || hl >= sizeof(host))
    return -1;
  memcpy(host, h, hl);
  host[hl] = '\0';
  errno = 0;
  port = strtol(colon + 1, &end, 10);
  if (errno != 0 || *end != '\0' || end == colon + 1 || port < 0 ||
      port > 65535)
    return -1;
  memset(out, 0, sizeof(*out));
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in*)out) == 0)
    return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6*)out) == 0)
    return 0;
  return -1;
}

static socklen_t addr_len(const struct sockaddr_storage* a) {
  return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                  : sizeof(struct sockaddr_in);
}

/* A listening socket on `a`; the bound address (real port) back in `a`. */
static int listen_on(struct sockaddr_storage* a) {
  socklen_t len = sizeof(*a);
  int one = 1;
  int fd = socket(a->ss_family, SOCK_STREAM, 0);
  if (fd < 0)
    die("socket", errno);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr*)a, addr_len(a)) != 0)
    die("bind", errno);
  if (listen(fd, 128) != 0)
    die("listen", errno);
  if (getsockname(fd, (struct sockaddr*)a, &len) != 0)
    die("getsockname", errno);
  return fd;
}

static int connect_to(const struct sockaddr_storage* a) {
  int fd = socket(a->ss_family, SOCK_STREAM, 0);
  if (fd < 0)
    return -errno;
  while (connect(fd, (const struct sockaddr*)a, addr_len(a)) != 0) {
    int err = errno;
    if (err == EINTR)
      continue;
    close(fd);
    return -err;
  }
  return fd;
}

static int accept_one(int lfd) {
  int fd;
  do
    fd = accept(lfd, NULL, NULL);
  while (fd < 0 && errno == EINTR);
  return fd;
}

/* One connection at a time: the relay under test moves one connection in
 * the benchmark, and a loop per connection (relay_bare() makes its own)
 * keeps this program as small as the peer it stands for. Setup (accept,
 * the blocking upstream connect) is outside the measured transfer. */
/* The relay the flags chose: relay_bare() or relay_bare_try(). */
static void (*relay_fn)(uv_os_sock_t, uv_os_sock_t, double*) = relay_bare;

static int serve(const char* listen_s, const char* connect_s, long count,
                 int nodelay) {
  struct sockaddr_storage la;
  struct sockaddr_storage ca;
  char name[64];
  long served = 0;
  int lfd;
  int in;
  int out;
  double cpu;
  if (parse_addr(listen_s, &la) != 0 || parse_addr(connect_s, &ca) != 0) {
    fprintf(stderr, "bare_relay: bad address (HOST:PORT, numeric)\n");
    return 2;
  }
  lfd = listen_on(&la);
  if (la.ss_family == AF_INET6) {
    struct sockaddr_in6* s6 = (struct sockaddr_in6*)&la;
    uv_ip6_name(s6, name, sizeof(name));
    printf("listening on [%s]:%d\n", name, ntohs(s6->sin6_port));
  } else {
    struct sockaddr_in* s4 = (struct sockaddr_in*)&la;
    uv_ip4_name(s4, name, sizeof(name));
    printf("listening on %s:%d\n", name, ntohs(s4->sin_port));
  }
  fflush(stdout);
  while (count == 0 || served < count) {
    in = accept_one(lfd);
    if (in < 0)
      die("accept", errno);
    out = connect_to(&ca);
    if (out < 0) {
      fprintf(stderr, "bare_relay: upstream: %s\n", strerror(-out));
      close(in);
      continue;
    }
    /* uvctx-relay sets TCP_NODELAY on both sides of a connection: so does
     * its peer, so that the two differ only in how they relay. */
    setsockopt(in, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
    setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
    relay_fn(in, out, &cpu); /* closes both */
    served++;
    fprintf(stderr, "bare_relay: connection %ld done, relay cpu %.3f s\n",
            served, cpu);
  }
  close(lfd);
  return 0;
}

/* ---- self-check ---------------------------------------------------------- */

#define CHECK_CHUNK (256 * 1024)

static unsigned char pattern_at(uint64_t off) {
  return (unsigned char)(off % 251);
}

typedef struct check_peer_s {
  int fd;
  uint64_t bytes; /* sender: to send; sink: received */
  uint64_t bad;   /* sink: bytes that differ from the pattern */
  int err;
} check_peer_t;

static void sender_main(void* arg) {
  check_peer_t* p = arg;
  unsigned char* buf = malloc(CHECK_CHUNK);
  uint64_t off = 0;
  size_t i;
  size_t n;
  ssize_t w;
  if (buf == NULL) {
    p->err = ENOMEM;
    close(p->fd);
    return;
  }
  while (off < p->bytes) {
    n = p->bytes - off < CHECK_CHUNK ? (size_t)(p->bytes - off) : CHECK_CHUNK;
    for (i = 0; i < n; i++)
      buf[i] = pattern_at(off + i);
    for (i = 0; i < n; i += (size_t)w) {
      w = write(p->fd, buf + i, n - i);
      if (w < 0 && errno == EINTR) {
        w = 0;
        continue;
      }
      if (w <= 0) {
        p->err = w < 0 ? errno : EPIPE;
        goto done;
      }
    }
    off += n;
  }
  shutdown(p->fd, SHUT_WR);
done:
  close(p->fd);
  free(buf);
}

static void sink_main(void* arg) {
  check_peer_t* p = arg;
  unsigned char* buf = malloc(CHECK_CHUNK);
  int lfd = p->fd;
  ssize_t n;
  ssize_t i;
  p->fd = accept_one(lfd);
  close(lfd);
  if (p->fd < 0 || buf == NULL) {
    p->err = p->fd < 0 ? errno : ENOMEM;
    free(buf);
    return;
  }
  for (;;) {
    n = read(p->fd, buf, CHECK_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n < 0)
        p->err = errno;
      break;
    }
    for (i = 0; i < n; i++)
      p->bad += buf[i] != pattern_at(p->bytes + (uint64_t)i);
    p->bytes += (uint64_t)n;
  }
  close(p->fd);
  free(buf);
}

static int self_check(uint64_t bytes) {
  struct sockaddr_storage relay_addr;
  struct sockaddr_storage sink_addr;
  check_peer_t sender = {-1, bytes, 0, 0};
  check_peer_t sink = {-1, 0, 0, 0};
  uv_thread_t st;
  uv_thread_t kt;
  uint64_t t0;
  double secs;
  double cpu;
  int lfd;
  int in;
  int out;
  parse_addr("127.0.0.1:0", &relay_addr);
  parse_addr("127.0.0.1:0", &sink_addr);
  lfd = listen_on(&relay_addr);
  sink.fd = listen_on(&sink_addr);
  if (uv_thread_create(&kt, sink_main, &sink) != 0)
    die("thread", EAGAIN);
  sender.fd = connect_to(&relay_addr);
  if (sender.fd < 0)
    die("connect", -sender.fd);
  in = accept_one(lfd);
  if (in < 0)
    die("accept", errno);
  close(lfd);
  out = connect_to(&sink_addr);
  if (out < 0)
    die("connect", -out);
  t0 = uv_hrtime();
  if (uv_thread_create(&st, sender_main, &sender) != 0)
    die("thread", EAGAIN);
  relay_fn(in, out, &cpu);
  uv_thread_join(&st);
  uv_thread_join(&kt);
  secs = (double)(uv_hrtime() - t0) / 1e9;
  if (sender.err != 0 || sink.err != 0 || sink.bytes != bytes ||
      sink.bad != 0) {
    fprintf(stderr,
            "bare_relay: self-check FAILED: sender %s, received %llu of "
            "%llu (%s), %llu bad\n",
            sender.err ? strerror(sender.err) : "ok",
            (unsigned long long)sink.bytes, (unsigned long long)bytes,
            sink.err ? strerror(sink.err) : "ok", (unsigned long long)sink.bad);
    return 1;
  }
  printf("bare_relay: self-check ok: %llu bytes in %.3f s (%.0f MB/s, "
         "relay cpu %.3f s)\n",
         (unsigned long long)bytes, secs, (double)bytes / 1e6 / secs, cpu);
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: bare_relay --listen HOST:PORT --connect HOST:PORT "
                  "[--count N] [--no-nodelay] [--try-write]\n"
                  "       bare_relay [--quick] [--self-check BYTES] "
                  "[--try-write]\n");
}

int main(int argc, char** argv) {
  const char* listen_s = NULL;
  const char* connect_s = NULL;
  unsigned long long check = 64ull << 20;
  long count = 0;
  int nodelay = 1;
  char* end;
  int i;
  /* A sink that goes away is an EPIPE from write(), not a dead relay. */
  signal(SIGPIPE, SIG_IGN);
  for (i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--quick") == 0) {
      check = 1ull << 20;
      continue;
    }
    if (strcmp(a, "--try-write") == 0) {
      relay_fn = relay_bare_try;
      continue;
    }
    if (strcmp(a, "--no-nodelay") == 0) {
      nodelay = 0;
      continue;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage();
      return 0;
    }
    if (v == NULL)
      goto bad;
    i++;
    errno = 0;
    if (strcmp(a, "--listen") == 0) {
      listen_s = v;
    } else if (strcmp(a, "--connect") == 0) {
      connect_s = v;
    } else if (strcmp(a, "--count") == 0) {
      count = strtol(v, &end, 10);
      if (errno != 0 || *end != '\0' || end == v || count < 0)
        goto bad;
    } else if (strcmp(a, "--self-check") == 0) {
      check = strtoull(v, &end, 10);
      if (errno != 0 || *end != '\0' || end == v || check == 0)
        goto bad;
    } else {
      goto bad;
    }
  }
  if (listen_s != NULL && connect_s != NULL)
    return serve(listen_s, connect_s, count, nodelay);
  if (listen_s != NULL || connect_s != NULL)
    goto bad;
  return self_check(check);
bad:
  usage();
  return 2;
}
