/* main.c owns uvctx-relay's entry point: parse and check the whole
 * configuration (exit 2 on any mistake, before anything is served), set
 * the process up (SIGPIPE, descriptor limit), then hand over to the server
 * until it has drained. */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>

#include "relay.h"

/* A relay needs two descriptors per connection: take the hard limit. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char** argv) {
  relay_config_t cfg;
  int rc;

  rc = relay_config_parse(&cfg, argc, argv);
  if (rc != 0)
    return rc > 0 ? RELAY_EXIT_OK : RELAY_EXIT_CONFIG;
  relay_log_init(cfg.log_format, cfg.log_level, cfg.log_sample);
  if (relay_config_load_tls(&cfg) != 0) {
    relay_config_free(&cfg);
    return RELAY_EXIT_CONFIG;
  }
  /* libuv writes with write(2): a peer that went away must be an EPIPE,
   * not the end of the process. */
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  rc = relay_server_run(&cfg);
  relay_config_free(&cfg);
  return rc;
}
