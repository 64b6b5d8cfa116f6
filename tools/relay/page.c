/* page.c owns the index page of the --metrics listener: links to every
 * endpoint and the live counters, in plain HTML (no script, one inline
 * style sheet), so that it works in any browser and in text browsers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"

static const char style[] =
    "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;"
    "background:#f5f6f8}"
    "header{background:#1d2330;color:#fff;padding:14px 28px}"
    "header h1{font-size:20px;margin:0}header p{margin:4px 0 0;color:#b8c0cc}"
    "main{padding:18px 28px;display:grid;gap:18px;"
    "grid-template-columns:repeat(auto-fit,minmax(340px,1fr))}"
    "section{background:#fff;border:1px solid #dde1e7;border-radius:8px;"
    "padding:14px 18px}"
    "h2{font-size:16px;margin:0 0 10px}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{padding:3px 8px;border-bottom:1px solid #eef0f3;text-align:left}"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}"
    "td,th{white-space:nowrap}section.wide{grid-column:1/-1}"
    "a{color:#0b5cad}ul{margin:0;padding-left:20px}li{margin:4px 0}"
    "form{margin:6px 0}input{width:4em}"
    ".warn{color:#a15c00}.note{color:#5b6472;font-size:13px}";

static void row(relay_text_t* t, const char* name, unsigned long long v) {
  relay_text_add(t, "<tr><td>%s</td><td class=\"n\">%llu</td></tr>\n", name, v);
}

int relay_page_index(relay_server_t* srv, relay_http_reply_t* reply) {
  size_t n = srv->nworkers + 1;
  uvctx_loop_stats_t* stats = malloc(n * sizeof(*stats));
  relay_text_t t = {NULL, 0, 0, 0};
  relay_totals_t tot;
  uint64_t up_s = (uv_hrtime() - srv->start_ns) / 1000000000u;
  size_t i;
  unsigned r;
  int any = 0;
  uint64_t fds = 2 * (uint64_t)atomic_load(&srv->active);

  if (stats == NULL)
    return UV_ENOMEM;
  relay_loop_stats(srv, stats);
  relay_totals(srv, &tot);
  relay_text_add(&t,
                 "<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
                 "charset=\"utf-8\"><title>" RELAY_NAME "</title>"
                 "<meta name=\"viewport\" content=\"width=device-width\">"
                 "<style>%s</style></head><body>\n<header><h1>" RELAY_NAME
                 "</h1><p>",
                 style);
  relay_text_html(&t, srv->listen_addr);
  relay_text_add(&t, " &rarr; ");
  relay_text_html(&t, srv->cfg->connect.text);
  relay_text_add(&t,
                 " &middot; %u worker(s) &middot; up %llus%s</p></header>\n"
                 "<main>\n",
                 srv->nworkers, (unsigned long long)up_s,
                 srv->signals > 0 ? " &middot; <b>draining</b>" : "");

  relay_text_add(&t, "<section><h2>Endpoints</h2><ul>\n"
                     "<li><a href=\"/metrics\">/metrics</a> Prometheus "
                     "text</li>\n"
                     "<li><a href=\"/debug/contexts\">/debug/contexts</a> "
                     "live contexts by creation site "
                     "(<a href=\"/debug/contexts?format=json\">JSON</a>)</li>\n"
                     "<li><a href=\"/debug/loops\">/debug/loops</a> each "
                     "worker's busy time per loop iteration (JSON)</li>\n"
                     "</ul>\n"
                     "<form action=\"/debug/trace\">Trace every worker for "
                     "<input type=\"number\" name=\"seconds\" value=\"5\" "
                     "min=\"1\" max=\"60\"> s <button>record</button></form>\n"
                     "<form action=\"/debug/heatmap\">Cancel-propagation "
                     "heatmap over <input type=\"number\" name=\"seconds\" "
                     "value=\"5\" min=\"1\" max=\"60\"> s "
                     "<button>record</button></form>\n"
                     "<p class=\"note\">These pages show peer addresses and "
                     "the program's symbols: keep this listener on "
                     "loopback.</p></section>\n");

  relay_text_add(&t, "<section><h2>Connections</h2><table>\n");
  row(&t, "open", atomic_load(&srv->active));
  row(&t, "accepted", tot.accepted);
  row(&t, "refused", tot.refused);
  row(&t, "bytes up", tot.bytes_up);
  row(&t, "bytes down", tot.bytes_down);
  relay_text_add(&t,
                 "<tr><td>their descriptors</td><td class=\"n%s\">%llu of "
                 "%llu</td></tr>\n</table></section>\n",
                 relay_max_fds() > 0 && fds * 10 > relay_max_fds() * 8 ? " warn"
                                                                       : "",
                 (unsigned long long)fds, (unsigned long long)relay_max_fds());

  relay_text_add(&t, "<section><h2>Closes by reason</h2><table>\n");
  for (r = 0; r < RELAY_REASONS; r++) {
    if (tot.closed[r] > 0) {
      row(&t, relay_reasons[r], tot.closed[r]);
      any = 1;
    }
  }
  if (!any)
    relay_text_add(&t, "<tr><td class=\"note\">none yet</td></tr>\n");
  relay_text_add(&t, "</table></section>\n");

  relay_text_add(
      &t, "<section class=\"wide\"><h2>Loops</h2><table>\n<tr><th>loop</th>"
          "<th class=\"n\">contexts</th><th class=\"n\">watches"
          "</th><th class=\"n\">deadlines</th><th class=\"n\">"
          "cancels</th></tr>\n");
  for (i = 0; i < n; i++) {
    uint64_t live = stats[i].contexts;
    if (i < srv->nworkers)
      relay_text_add(&t, "<tr><td>worker-%zu</td>", i);
    else
      relay_text_add(&t, "<tr><td>control</td>");
    relay_text_add(&t,
                   "<td class=\"n\">%llu</td><td class=\"n\">%llu</td>"
                   "<td class=\"n\">%llu</td><td class=\"n\">%llu</td></tr>\n",
                   (unsigned long long)live,
                   (unsigned long long)stats[i].watches,
                   (unsigned long long)stats[i].deadlines,
                   (unsigned long long)stats[i].cancels);
  }
  relay_text_add(&t, "</table></section>\n</main></body></html>\n");
  free(stats);
  if (t.oom) {
    free(t.p);
    return UV_ENOMEM;
  }
  reply->code = 200;
  reply->ctype = "text/html; charset=utf-8";
  reply->body = t.p;
  reply->len = t.len;
  return 0;
}
