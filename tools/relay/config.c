/* config.c owns the relay's configuration: the command line, durations,
 * addresses and the two TLS configurations. Everything that can be wrong
 * in a configuration is found here, before a socket is bound, and reported
 * as one line on stderr (the caller exits 2). */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

static const char usage[] =
    "usage: " RELAY_NAME " --listen HOST:PORT --connect HOST:PORT [options]\n"
    "  --tls-cert FILE --tls-key FILE   terminate TLS on accepted "
    "connections\n"
    "  --connect-tls [--ca FILE] [--sni NAME] [--alpn LIST] [--no-verify]\n"
    "                                   originate TLS to the upstream\n"
    "  --connect-timeout DUR            upstream connect and upstream TLS\n"
    "                                   handshake (default 5s)\n"
    "  --handshake-timeout DUR          client TLS handshake (default 10s)\n"
    "  --idle-timeout DUR               no bytes either way (default 60s)\n"
    "  --max-lifetime DUR               whole connection (default none)\n"
    "  --client-fin-timeout DUR         idle limit for the client once the\n"
    "                                   upstream has half-closed\n"
    "  --server-fin-timeout DUR         idle limit for the upstream once the\n"
    "                                   client has half-closed (both: default\n"
    "                                   the idle timeout)\n"
    "  --drain-timeout DUR              on SIGTERM/SIGINT (default 30s)\n"
    "  --send-timeout DUR               a reader that takes nothing for this\n"
    "                                   long while data waits (default 60s)\n"
    "  --max-buffer-memory SIZE         relay-wide budget of relay buffers;\n"
    "                                   reading pauses beyond it (default\n"
    "                                   none; 64 KiB buffers; SIZE: 512K,\n"
    "                                   64M, 1G or bytes)\n"
    "  --max-connections N              refuse above N (default 10000)\n"
    "  --workers N                      event loops on N threads "
    "(default 1)\n"
    "  --log-format logfmt|json         one line per event on stderr\n"
    "  --log-level open|close|error|summary\n"
    "                                   per-connection lines: open and\n"
    "                                   close, close (default), only\n"
    "                                   unexpected closes, or none and a\n"
    "                                   summary per worker each interval\n"
    "  --log-interval DUR               summary period (default 10s)\n"
    "  --log-sample N                   open/close lines of one connection\n"
    "                                   in N (default 1: all); unexpected\n"
    "                                   closes are always written\n"
    "  --metrics HOST:PORT              serve Prometheus text at /metrics\n"
    "  --trace FILE                     trace each worker loop (Chrome JSON;\n"
    "                                   FILE.N per worker when N > 1)\n"
    "DUR is a whole number with ms, s or m: 500ms, 10s, 2m. 0 turns\n"
    "--idle-timeout and --max-lifetime off and makes --drain-timeout cancel\n"
    "at once. See docs/relay.md.\n";

static int fail(const char* fmt, const char* a, const char* b) {
  fprintf(stderr, RELAY_NAME ": ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  return -1;
}

/* The whole number at the start of *p (at least one digit), past which *p
 * is moved: 0, or -1 on no digit or overflow. */
static int leading_u64(const char** p, uint64_t* out) {
  uint64_t n = 0;

  if (*p == NULL || **p < '0' || **p > '9')
    return -1;
  while (**p >= '0' && **p <= '9') {
    if (n > UINT64_MAX / 10 - 9)
      return -1;
    n = n * 10 + (uint64_t)(*(*p)++ - '0');
  }
  *out = n;
  return 0;
}

int relay_parse_duration(const char* s, uint64_t* out_ms) {
  const char* p = s;
  uint64_t n;
  uint64_t mul;

  if (leading_u64(&p, &n) != 0)
    return -1;
  if (strcmp(p, "ms") == 0)
    mul = 1;
  else if (strcmp(p, "s") == 0)
    mul = 1000;
  else if (strcmp(p, "m") == 0)
    mul = 60 * 1000;
  else if (*p == '\0' && n == 0)
    mul = 1; /* a bare 0 needs no unit */
  else
    return -1;
  /* Cap at a year: uvctx deadlines are uv_hrtime() nanoseconds, and the
   * sum now + timeout must not wrap. */
  if (n > (uint64_t)366 * 24 * 3600 * 1000 / mul)
    return -1;
  *out_ms = n * mul;
  return 0;
}

static int parse_uint(const char* s, unsigned min, unsigned max,
                      unsigned* out) {
  char* end;
  unsigned long v;

  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return -1;
  *out = (unsigned)v;
  return 0;
}

int relay_parse_addr(const char* s, int passive, relay_addr_t* out, char* err,
                     size_t errlen) {
  const char* colon;
  const char* host;
  size_t hlen;
  unsigned port;
  struct addrinfo hints;
  struct addrinfo* res = NULL;
  int rc;

  memset(out, 0, sizeof(*out));
  if (strlen(s) >= sizeof(out->text)) {
    snprintf(err, errlen, "address too long");
    return -1;
  }
  snprintf(out->text, sizeof(out->text), "%s", s);
  if (s[0] == '[') {
    const char* close = strchr(s, ']');
    if (close == NULL || close[1] != ':') {
      snprintf(err, errlen, "expected [IPV6]:PORT");
      return -1;
    }
    host = s + 1;
    hlen = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL) {
      snprintf(err, errlen, "expected HOST:PORT");
      return -1;
    }
    host = s;
    hlen = (size_t)(colon - s);
    if (memchr(host, ':', hlen) != NULL) {
      snprintf(err, errlen, "write IPv6 addresses as [ADDR]:PORT");
      return -1;
    }
  }
  if (hlen == 0 || hlen >= sizeof(out->host)) {
    snprintf(err, errlen, "missing or too long host");
    return -1;
  }
  memcpy(out->host, host, hlen);
  out->host[hlen] = '\0';
  if (parse_uint(colon + 1, passive ? 0 : 1, 65535, &port) != 0) {
    snprintf(err, errlen, "bad port '%s'", colon + 1);
    return -1;
  }

  /* Names are checked at startup, so that a typo fails at once. --listen
   * binds the address found here; --connect's host is dialed again by each
   * connection (uvctx_dial: every address, both families). */
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  rc = getaddrinfo(out->host, colon + 1, &hints, &res);
  if (rc != 0 || res == NULL) {
    snprintf(err, errlen, "cannot resolve '%s': %s", out->host,
             rc != 0 ? gai_strerror(rc) : "no address");
    if (res != NULL)
      freeaddrinfo(res);
    return -1;
  }
  memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
  out->len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

void relay_format_addr(const struct sockaddr* sa, char* out, size_t len) {
  char ip[64];

  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6* a6 = (const struct sockaddr_in6*)sa;
    uv_ip6_name(a6, ip, sizeof(ip));
    snprintf(out, len, "[%s]:%u", ip, (unsigned)ntohs(a6->sin6_port));
  } else if (sa->sa_family == AF_INET) {
    const struct sockaddr_in* a4 = (const struct sockaddr_in*)sa;
    uv_ip4_name(a4, ip, sizeof(ip));
    snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(a4->sin_port));
  } else {
    snprintf(out, len, "unknown");
  }
}

/* "65536", "512K", "64M", "1G" (binary multiples) -> bytes; not 0. */
static int parse_size(const char* s, uint64_t* out) {
  uint64_t n;
  uint64_t mul = 1;

  if (leading_u64(&s, &n) != 0)
    return -1;
  if (strcmp(s, "K") == 0)
    mul = 1ull << 10;
  else if (strcmp(s, "M") == 0)
    mul = 1ull << 20;
  else if (strcmp(s, "G") == 0)
    mul = 1ull << 30;
  else if (*s != '\0')
    return -1;
  if (n == 0 || n > UINT64_MAX / mul)
    return -1;
  *out = n * mul;
  return 0;
}

static int duration_opt(const char* name, const char* v, uint64_t* out,
                        int zero_ok) {
  if (relay_parse_duration(v, out) != 0)
    return fail("bad duration for %s: '%s' (use 500ms, 10s or 2m)", name, v);
  if (*out == 0 && !zero_ok)
    return fail("%s must be greater than zero, not '%s'", name, v);
  return 0;
}

int relay_config_parse(relay_config_t* cfg, int argc, char** argv) {
  const char* listen = NULL;
  const char* connect = NULL;
  const char* metrics = NULL;
  char err[300];
  int i;

  memset(cfg, 0, sizeof(*cfg));
  cfg->verify = 1;
  cfg->connect_timeout_ms = 5000;
  cfg->handshake_timeout_ms = 10000;
  cfg->idle_timeout_ms = 60000;
  cfg->max_lifetime_ms = 0;
  cfg->drain_timeout_ms = 30000;
  cfg->send_timeout_ms = 60000;
  cfg->max_connections = 10000;
  cfg->workers = 1;
  cfg->log_format = RELAY_LOG_LOGFMT;
  cfg->log_level = RELAY_LEVEL_CLOSE;
  cfg->log_interval_ms = 10000;
  cfg->log_sample = 1;

  for (i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = 1;

    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      return 1;
    }
    if (strcmp(a, "--version") == 0) {
      printf(RELAY_NAME " %d.%d.%d\n", UVCTX_VERSION_MAJOR, UVCTX_VERSION_MINOR,
             UVCTX_VERSION_PATCH);
      return 1;
    }
    if (strcmp(a, "--connect-tls") == 0) {
      cfg->connect_tls = 1;
      continue;
    }
    if (strcmp(a, "--no-verify") == 0) {
      cfg->verify = 0;
      continue;
    }
    if (strncmp(a, "--", 2) != 0)
      return fail("unexpected argument '%s'%s (see --help)", a, "");
    if (v == NULL)
      return fail("%s needs a value%s (see --help)", a, "");

    if (strcmp(a, "--listen") == 0) {
      listen = v;
    } else if (strcmp(a, "--connect") == 0) {
      connect = v;
    } else if (strcmp(a, "--tls-cert") == 0) {
      cfg->tls_cert = v;
    } else if (strcmp(a, "--tls-key") == 0) {
      cfg->tls_key = v;
    } else if (strcmp(a, "--ca") == 0) {
      cfg->ca = v;
    } else if (strcmp(a, "--sni") == 0) {
      cfg->sni = v;
    } else if (strcmp(a, "--alpn") == 0) {
      cfg->alpn = v;
    } else if (strcmp(a, "--connect-timeout") == 0) {
      if (duration_opt(a, v, &cfg->connect_timeout_ms, 0) != 0)
        return -1;
    } else if (strcmp(a, "--handshake-timeout") == 0) {
      if (duration_opt(a, v, &cfg->handshake_timeout_ms, 0) != 0)
        return -1;
    } else if (strcmp(a, "--idle-timeout") == 0) {
      if (duration_opt(a, v, &cfg->idle_timeout_ms, 1) != 0)
        return -1;
    } else if (strcmp(a, "--max-lifetime") == 0) {
      if (duration_opt(a, v, &cfg->max_lifetime_ms, 1) != 0)
        return -1;
    } else if (strcmp(a, "--drain-timeout") == 0) {
      if (duration_opt(a, v, &cfg->drain_timeout_ms, 1) != 0)
        return -1;
    } else if (strcmp(a, "--send-timeout") == 0) {
      if (duration_opt(a, v, &cfg->send_timeout_ms, 1) != 0)
        return -1;
    } else if (strcmp(a, "--max-buffer-memory") == 0) {
      if (parse_size(v, &cfg->max_buffer_memory) != 0)
        return fail("bad --max-buffer-memory '%s' (bytes, or with K, M, G;"
                    " at least 64K per worker)%s",
                    v, "");
    } else if (strcmp(a, "--max-connections") == 0) {
      if (parse_uint(v, 1, 1000000, &cfg->max_connections) != 0)
        return fail("bad --max-connections '%s' (1 to 1000000)%s", v, "");
    } else if (strcmp(a, "--workers") == 0) {
      if (parse_uint(v, 1, 256, &cfg->workers) != 0)
        return fail("bad --workers '%s' (1 to 256)%s", v, "");
    } else if (strcmp(a, "--log-format") == 0) {
      if (strcmp(v, "logfmt") == 0)
        cfg->log_format = RELAY_LOG_LOGFMT;
      else if (strcmp(v, "json") == 0)
        cfg->log_format = RELAY_LOG_JSON;
      else
        return fail("bad --log-format '%s' (logfmt or json)%s", v, "");
    } else if (strcmp(a, "--log-level") == 0) {
      static const char* const levels[] = {"open", "close", "error", "summary"};
      int k;
      for (k = 0; k < 4 && strcmp(v, levels[k]) != 0; k++)
        ;
      if (k == 4)
        return fail("bad --log-level '%s' (open, close, error or summary)%s", v,
                    "");
      cfg->log_level = RELAY_LEVEL_OPEN + k;
    } else if (strcmp(a, "--client-fin-timeout") == 0) {
      if (duration_opt(a, v, &cfg->client_fin_timeout_ms, 1) != 0)
        return -1;
    } else if (strcmp(a, "--server-fin-timeout") == 0) {
      if (duration_opt(a, v, &cfg->server_fin_timeout_ms, 1) != 0)
        return -1;
    } else if (strcmp(a, "--log-sample") == 0) {
      unsigned n;
      if (parse_uint(v, 1, 1000000, &n) != 0)
        return fail("bad --log-sample '%s' (1 to 1000000)%s", v, "");
      cfg->log_sample = n;
    } else if (strcmp(a, "--log-interval") == 0) {
      if (duration_opt(a, v, &cfg->log_interval_ms, 0) != 0)
        return -1;
    } else if (strcmp(a, "--metrics") == 0) {
      metrics = v;
    } else if (strcmp(a, "--trace") == 0) {
      if (*v == '\0')
        return fail("--trace needs a file name%s%s", "", "");
      cfg->trace = v;
    } else {
      return fail("unknown option '%s'%s (see --help)", a, "");
    }
    i += takes;
  }

  if (listen == NULL || connect == NULL)
    return fail("--listen and --connect are required%s%s (see --help)", "", "");
  if (cfg->max_buffer_memory != 0 &&
      cfg->max_buffer_memory / cfg->workers < RELAY_BUFFER)
    return fail("--max-buffer-memory is less than one 64K buffer per "
                "worker%s%s",
                "", "");
  if (relay_parse_addr(listen, 1, &cfg->listen, err, sizeof(err)) != 0)
    return fail("bad --listen address '%s': %s", listen, err);
  if (relay_parse_addr(connect, 0, &cfg->connect, err, sizeof(err)) != 0)
    return fail("bad --connect address '%s': %s", connect, err);
  if (metrics != NULL) {
    if (relay_parse_addr(metrics, 1, &cfg->metrics, err, sizeof(err)) != 0)
      return fail("bad --metrics address '%s': %s", metrics, err);
    cfg->has_metrics = 1;
  }
  if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
    return fail("--tls-cert and --tls-key go together%s%s", "", "");
  if (!cfg->connect_tls && (cfg->ca != NULL || cfg->sni != NULL ||
                            cfg->alpn != NULL || !cfg->verify))
    return fail("--ca, --sni, --alpn and --no-verify need --connect-tls%s%s",
                "", "");
  return 0;
}

static int tls_fail(const char* what, uvctx_tls_config_t* c, int rc) {
  const char* why = uvctx_tls_config_reason(c);
  fprintf(stderr, RELAY_NAME ": %s: %s\n", what,
          why != NULL ? why : uv_strerror(rc));
  return -1;
}

/* Splits "h2,http/1.1" into the array uvctx_tls_config_alpn() takes. */
static int set_alpn(uvctx_tls_config_t* c, const char* list) {
  char buf[1024];
  const char* protos[32];
  size_t n = 0;
  char* save = NULL;
  char* tok;
  int rc;

  if (strlen(list) >= sizeof(buf)) {
    fprintf(stderr, RELAY_NAME ": --alpn list too long\n");
    return -1;
  }
  snprintf(buf, sizeof(buf), "%s", list);
  for (tok = strtok_r(buf, ",", &save); tok != NULL;
       tok = strtok_r(NULL, ",", &save)) {
    if (n == sizeof(protos) / sizeof(protos[0])) {
      fprintf(stderr, RELAY_NAME ": --alpn: at most %zu protocols\n", n);
      return -1;
    }
    protos[n++] = tok;
  }
  if (n == 0) {
    fprintf(stderr, RELAY_NAME ": --alpn list is empty\n");
    return -1;
  }
  rc = uvctx_tls_config_alpn(c, protos, n);
  if (rc != 0)
    return tls_fail("bad --alpn list", c, rc);
  return 0;
}

int relay_config_load_tls(relay_config_t* cfg) {
  char what[1200];
  int rc;

  if (cfg->tls_cert != NULL) {
    rc = uvctx_tls_config_new(UVCTX_TLS_SERVER, &cfg->server_tls);
    if (rc != 0) {
      fprintf(stderr, RELAY_NAME ": TLS: %s\n", uv_strerror(rc));
      return -1;
    }
    rc = uvctx_tls_config_cert_file(cfg->server_tls, cfg->tls_cert,
                                    cfg->tls_key);
    if (rc != 0) {
      snprintf(what, sizeof(what), "cannot use --tls-cert %s --tls-key %s",
               cfg->tls_cert, cfg->tls_key);
      return tls_fail(what, cfg->server_tls, rc);
    }
  }
  if (cfg->connect_tls) {
    rc = uvctx_tls_config_new(UVCTX_TLS_CLIENT, &cfg->client_tls);
    if (rc != 0) {
      fprintf(stderr, RELAY_NAME ": TLS: %s\n", uv_strerror(rc));
      return -1;
    }
    if (cfg->ca != NULL) {
      rc = uvctx_tls_config_ca_file(cfg->client_tls, cfg->ca);
      if (rc != 0) {
        snprintf(what, sizeof(what), "cannot use --ca %s", cfg->ca);
        return tls_fail(what, cfg->client_tls, rc);
      }
    }
    rc = uvctx_tls_config_verify(cfg->client_tls, cfg->verify);
    if (rc != 0)
      return tls_fail("cannot set verification", cfg->client_tls, rc);
    if (cfg->alpn != NULL && set_alpn(cfg->client_tls, cfg->alpn) != 0)
      return -1;
    /* The name sent as SNI and checked against the certificate: --sni, or
     * the host of --connect (a name, or an address matched against IP
     * SANs). */
    cfg->upstream_name = cfg->sni != NULL ? cfg->sni : cfg->connect.host;
  }
  return 0;
}

void relay_config_free(relay_config_t* cfg) {
  uvctx_tls_config_unref(cfg->server_tls);
  uvctx_tls_config_unref(cfg->client_tls);
  cfg->server_tls = NULL;
  cfg->client_tls = NULL;
}
