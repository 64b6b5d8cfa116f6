/* relay_flags.c owns the fuzz target of uvctx-relay's command line
 * (tools/relay/config.c): the input is an argument vector (NUL-separated).
 * Invariants at the end of every input: the parser returns 0, 1 (help or
 * version) or -1; a configuration it accepts has both addresses, durations
 * and counts within their documented ranges and TLS options only where they
 * belong; nothing is leaked (ASan's leak check).
 *
 * Host names are never looked up: this binary's getaddrinfo() refuses any
 * name that is not a numeric address or "localhost" (EAI_NONAME) before
 * libc sees it, so no input can make the fuzzer send a DNS query. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "relay.h"

typedef int (*gai_fn)(const char*, const char*, const struct addrinfo*,
                      struct addrinfo**);

int getaddrinfo(const char* node, const char* service,
                const struct addrinfo* hints, struct addrinfo** res) {
  static gai_fn real;
  struct addrinfo h;

  if (real == NULL)
    real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
  FZ_CHECK(real != NULL);
  memset(&h, 0, sizeof(h));
  if (hints != NULL)
    h = *hints;
  if (node != NULL && strcmp(node, "localhost") != 0)
    h.ai_flags |= AI_NUMERICHOST;
  h.ai_flags |= AI_NUMERICSERV;
  return real(node, service, &h, res);
}

#define MAX_ARGS 64
#define YEAR_MS ((uint64_t)366 * 24 * 3600 * 1000)

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char* text = malloc(size + 1);
  char* argv[MAX_ARGS + 2];
  relay_config_t cfg;
  int argc = 1;
  int saved[2] = {-1, -1};
  int quiet = getenv("UVCTX_FUZZ_VERBOSE") == NULL;
  int rc;
  size_t i, start = 0;

  FZ_CHECK(text != NULL);
  memcpy(text, data, size);
  text[size] = '\0';
  argv[0] = (char*)"uvctx-relay";
  for (i = 0; i <= size && argc <= MAX_ARGS; i++)
    if (i == size || text[i] == '\0') {
      if (i > start || i < size)
        argv[argc++] = text + start;
      start = i + 1;
    }
  argv[argc] = NULL;
  /* The parser prints usage and one line per error: keep them out of the
   * fuzzer's output (UVCTX_FUZZ_VERBOSE=1 shows them). */
  if (quiet) {
    int devnull = open("/dev/null", O_WRONLY);
    FZ_CHECK(devnull >= 0);
    fflush(stdout);
    fflush(stderr);
    saved[0] = dup(1);
    saved[1] = dup(2);
    dup2(devnull, 1);
    dup2(devnull, 2);
    close(devnull);
  }
  rc = relay_config_parse(&cfg, argc, argv);
  if (quiet) {
    fflush(stdout);
    fflush(stderr);
    dup2(saved[0], 1);
    dup2(saved[1], 2);
    close(saved[0]);
    close(saved[1]);
  }
  FZ_CHECK(rc == 0 || rc == 1 || rc == -1);
  if (rc == 0) {
    FZ_CHECK(cfg.listen.len > 0 && cfg.connect.len > 0);
    FZ_CHECK(cfg.workers >= 1 && cfg.workers <= 256);
    FZ_CHECK(cfg.max_connections >= 1 && cfg.max_connections <= 1000000);
    FZ_CHECK(cfg.connect_timeout_ms > 0 && cfg.handshake_timeout_ms > 0);
    FZ_CHECK(cfg.connect_timeout_ms <= YEAR_MS &&
             cfg.handshake_timeout_ms <= YEAR_MS &&
             cfg.idle_timeout_ms <= YEAR_MS && cfg.max_lifetime_ms <= YEAR_MS &&
             cfg.drain_timeout_ms <= YEAR_MS);
    FZ_CHECK(cfg.log_format == RELAY_LOG_LOGFMT ||
             cfg.log_format == RELAY_LOG_JSON);
    FZ_CHECK((cfg.tls_cert == NULL) == (cfg.tls_key == NULL));
    FZ_CHECK(cfg.connect_tls || (cfg.ca == NULL && cfg.sni == NULL &&
                                 cfg.alpn == NULL && cfg.verify));
    FZ_CHECK(cfg.trace == NULL || cfg.trace[0] != '\0');
    relay_config_free(&cfg);
  }
  free(text);
  return 0;
}
