#include "landing_page.h"

#include <fmt/format.h>

#include "health_document.h"

namespace poolscope::exporter {

std::string html_escape(std::string_view text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      case '\'':
        escaped += "&#39;";
        break;
      default:
        escaped += c;
    }
  }
  return escaped;
}

std::string render_landing_page(const LandingPageInfo& info, const PoolStatistics& stats,
                                bool shutting_down) {
  const std::string last_error =
      stats.last_error ? html_escape(*stats.last_error) : std::string("none");
  return fmt::format(
      R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>poolscope exporter</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:48em}}td,th{{text-align:left;padding:0 1em 0 0}}</style>
</head>
<body>
<h1>poolscope exporter</h1>
<p>PostgreSQL connection pool metrics and health, version {version}.</p>
<ul>
<li><a href="{metrics}">{metrics}</a>: Prometheus metrics</li>
<li><a href="/health">/health</a>: health document (HTTP 503 when the pool cannot serve)</li>
<li>/mcp: MCP endpoint (JSON-RPC 2.0 over POST; resources health://connection-pool and stats://connection-pool)</li>
</ul>
<h2>Pool {pool}</h2>
<table>
<tr><th>state</th><td>{state}{stopping}</td></tr>
<tr><th>health</th><td>{health}</td></tr>
<tr><th>database</th><td>{database}</td></tr>
<tr><th>connections</th><td>{total} open: {active} active, {idle} idle; {waiting} waiting (min {min}, max {max})</td></tr>
<tr><th>last error</th><td>{last_error}</td></tr>
</table>
</body>
</html>
)",
      fmt::arg("version", html_escape(info.version)),
      fmt::arg("metrics", html_escape(info.telemetry_path)),
      fmt::arg("pool", html_escape(stats.pool_name)),
      fmt::arg("state", html_escape(to_string(stats.state))),
      fmt::arg("stopping", shutting_down ? " (exporter shutting down)" : ""),
      fmt::arg("health", html_escape(to_string(stats.health))),
      fmt::arg("database", html_escape(database_status(stats))),
      fmt::arg("total", stats.total_connections), fmt::arg("active", stats.active_connections),
      fmt::arg("idle", stats.idle_connections), fmt::arg("waiting", stats.waiting_requests),
      fmt::arg("min", stats.min_size), fmt::arg("max", stats.max_size),
      fmt::arg("last_error", last_error));
}

}  // namespace poolscope::exporter
