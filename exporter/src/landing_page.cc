#include "landing_page.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <string>
#include <vector>

#include "health_document.h"

namespace poolscope::exporter {
namespace {

using nlohmann::json;

// The alerts of rules/codebase-mcp-pool.yml; each has a runbook of its name.
constexpr auto kAlerts = std::to_array<std::string_view>({
    "ConnectionPoolNoConnections",
    "ConnectionPoolUnhealthy",
    "ConnectionPoolExhausted",
    "ConnectionPoolLeak",
    "ConnectionPoolHighLatency",
    "ConnectionPoolDegraded",
    "ConnectionPoolLowCapacity",
    "ConnectionPoolFullyUtilized",
});

constexpr std::string_view kStyle = R"(<style>
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;color:#1f2328}
header{display:flex;align-items:center;gap:1em;flex-wrap:wrap}
h1{font-size:1.5em;margin:0}
h2{font-size:1.1em;margin:1.5em 0 .5em}
.badge{display:inline-block;padding:.2em .7em;border-radius:1em;color:#fff;font-weight:600}
.health-healthy .badge{background:#1a7f37}
.health-degraded .badge{background:#bf8700}
.health-unhealthy .badge{background:#cf222e}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(11em,1fr));gap:.6em}
.tile{border:1px solid #d0d7de;border-radius:.4em;padding:.5em .7em}
.tile .value{font-size:1.4em;font-weight:600;display:block}
.tile .label{color:#59636e;font-size:.85em}
table{border-collapse:collapse}
td,th{text-align:left;padding:.2em 1em .2em 0;vertical-align:top}
.error{color:#cf222e}
#connection{color:#59636e;font-size:.85em}
#connection.stale{color:#cf222e;font-weight:600}
ul.links{padding-left:1.2em}
</style>
)";

// Fetches the page again every interval and swaps in the new #pool, so the
// page stays current without losing the reader's scroll position; says so
// when the exporter stops answering.
constexpr std::string_view kRefreshScript = R"(<script>
(function () {
  var interval = Number(document.body.getAttribute('data-refresh-ms'));
  var refreshes = 0;
  var status = document.getElementById('connection');
  function refresh() {
    fetch(window.location.pathname, {cache: 'no-store', credentials: 'same-origin'})
      .then(function (response) {
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.text();
      })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, 'text/html');
        var pool = next.getElementById('pool');
        if (!pool) throw new Error('unexpected answer');
        document.getElementById('pool').replaceWith(document.adoptNode(pool));
        document.body.className = next.body.className;
        refreshes += 1;
        document.body.setAttribute('data-refreshes', String(refreshes));
        status.className = '';
        status.setAttribute('data-last', new Date().toLocaleTimeString());
        status.textContent = 'Updated ' + new Date().toLocaleTimeString() + ', every ' +
            interval / 1000 + ' s.';
      })
      .catch(function (error) {
        status.className = 'stale';
        status.textContent = 'The exporter is not answering (' + error.message +
            '); the values below are from ' + status.getAttribute('data-last') + '.';
      })
      .finally(function () { setTimeout(refresh, interval); });
  }
  status.setAttribute('data-last', new Date().toLocaleTimeString());
  setTimeout(refresh, interval);
})();
</script>
)";

std::string format_ms(double ms) { return fmt::format("{:.1f} ms", ms); }

void tile(std::string& out, std::string_view label, const std::string& value, std::string_view id) {
  fmt::format_to(
      std::back_inserter(out),
      R"(<div class="tile" id="{}"><span class="value">{}</span><span class="label">{}</span></div>)"
      "\n",
      id, html_escape(value), html_escape(label));
}

std::string json_cell(const json& value) {
  if (value.is_string()) return html_escape(value.get<std::string>());
  if (value.is_null()) return "";
  return html_escape(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

// The health document's list of connections held past the leak timeout, one
// row per connection and one column per field: the id first, then the others
// in the document's (alphabetical) order.
void leak_table(std::string& out, const json& leaks) {
  std::vector<std::string> columns{"id"};
  for (const json& leak : leaks) {
    if (!leak.is_object()) continue;
    for (const auto& [key, value] : leak.items()) {
      if (std::find(columns.begin(), columns.end(), key) == columns.end()) columns.push_back(key);
    }
  }
  if (std::none_of(leaks.begin(), leaks.end(),
                   [](const json& leak) { return leak.is_object() && leak.contains("id"); })) {
    columns.erase(columns.begin());
  }
  out += "<table id=\"leaks\">\n<tr>";
  for (const std::string& column : columns) {
    fmt::format_to(std::back_inserter(out), "<th>{}</th>", html_escape(column));
  }
  out += "</tr>\n";
  for (const json& leak : leaks) {
    if (!leak.is_object()) continue;
    out += "<tr class=\"leak\">";
    for (const std::string& column : columns) {
      out += "<td>";
      if (leak.contains(column)) out += json_cell(leak[column]);
      out += "</td>";
    }
    out += "</tr>\n";
  }
  out += "</table>\n";
}

}  // namespace

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
                                const json& health, bool shutting_down) {
  std::string out;
  out.reserve(std::size_t{12} * 1024);
  auto to = std::back_inserter(out);
  const std::string health_name(to_string(stats.health));
  const std::string state_name(to_string(stats.state));
  const auto refresh_seconds = info.refresh_interval.count();

  fmt::format_to(to,
                 R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{pool} {state} · poolscope exporter</title>
<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>
)",
                 fmt::arg("pool", html_escape(stats.pool_name)),
                 fmt::arg("state", html_escape(state_name)), fmt::arg("refresh", refresh_seconds));
  out += kStyle;
  fmt::format_to(to, R"(</head>
<body class="health-{health}" data-refresh-ms="{refresh_ms}" data-refreshes="0">
)",
                 fmt::arg("health", html_escape(health_name)),
                 fmt::arg("refresh_ms", refresh_seconds * 1000));

  // Everything in #pool is replaced on each refresh.
  fmt::format_to(to, R"(<main id="pool">
<header>
<h1>Pool {pool}</h1>
<span class="badge state-{state}" id="state">{state_text}{stopping}</span>
<span id="health">health: {health}</span>
<span id="database">database: {database}</span>
</header>
)",
                 fmt::arg("pool", html_escape(stats.pool_name)),
                 fmt::arg("state", html_escape(state_name)),
                 fmt::arg("state_text", html_escape(state_name)),
                 fmt::arg("stopping", shutting_down ? " (exporter shutting down)" : ""),
                 fmt::arg("health", html_escape(health_name)),
                 fmt::arg("database", html_escape(database_status(stats))));

  out += "<h2>Connections</h2>\n<div class=\"grid\">\n";
  tile(out, "active", std::to_string(stats.active_connections), "active");
  tile(out, "idle", std::to_string(stats.idle_connections), "idle");
  tile(out, "open (min / max)",
       fmt::format("{} ({} / {})", stats.total_connections, stats.min_size, stats.max_size),
       "total");
  tile(out, "waiting callers", std::to_string(stats.waiting_requests), "waiting");
  tile(out, "being opened", std::to_string(stats.pending_connections), "pending");
  const double utilization = stats.max_size == 0
                                 ? 0.0
                                 : 100.0 * static_cast<double>(stats.active_connections) /
                                       static_cast<double>(stats.max_size);
  tile(out, "utilization (active / max)", fmt::format("{:.0f} %", utilization), "utilization");
  tile(out, "validation round trip",
       stats.last_validation_latency_ms ? format_ms(*stats.last_validation_latency_ms) : "–",
       "latency");
  tile(out, "mean acquisition time", format_ms(stats.avg_acquisition_time_ms), "acquisition");
  tile(out, "peak wait, health window", format_ms(stats.recent_peak_wait_time_ms), "recent-wait");
  out += "</div>\n<h2>Since start</h2>\n<div class=\"grid\">\n";
  tile(out, "acquisitions", std::to_string(stats.total_acquisitions), "acquisitions");
  tile(out, "acquisition timeouts", std::to_string(stats.acquire_timeouts), "timeouts");
  tile(out, "connections opened", std::to_string(stats.connections_created), "created");
  tile(out, "failed connection attempts", std::to_string(stats.connection_failures), "failures");
  tile(out, "reconnection attempts", std::to_string(stats.reconnect_attempts), "reconnects");
  tile(out, "errors, health window", std::to_string(stats.recent_errors), "recent-errors");
  tile(out, "leaks detected (returned later)",
       fmt::format("{} ({})", stats.leaks_detected, stats.leaks_returned), "leaks-detected");
  tile(out, "uptime", fmt::format("{:.0f} s", stats.uptime_seconds), "uptime");
  out += "</div>\n";

  out += "<h2>Leaked connections</h2>\n";
  const json* leaks = health.is_object() && health.contains("leaks") ? &health["leaks"] : nullptr;
  if (leaks != nullptr && leaks->is_array() && !leaks->empty()) {
    leak_table(out, *leaks);
  } else if (stats.leaked_connections > 0) {
    fmt::format_to(
        to,
        R"(<p id="leaked" class="error">{} connections held longer than the leak timeout; the log names where each was acquired.</p>
)",
        stats.leaked_connections);
  } else {
    out += "<p id=\"leaked\">None held longer than the leak timeout.</p>\n";
  }

  out += "<h2>Last error</h2>\n";
  if (stats.last_error) {
    const std::string when =
        stats.last_error_time ? " (" + iso8601_utc(*stats.last_error_time) + ")" : "";
    fmt::format_to(to, "<p id=\"last-error\" class=\"error\">{}{}</p>\n",
                   html_escape(*stats.last_error), html_escape(when));
  } else {
    out += "<p id=\"last-error\">none</p>\n";
  }
  fmt::format_to(to, "<p id=\"rendered\" data-timestamp=\"{0}\">As of {0}.</p>\n</main>\n",
                 html_escape(health.is_object() && health.contains("timestamp") &&
                                     health["timestamp"].is_string()
                                 ? health["timestamp"].get<std::string>()
                                 : std::string()));
  out += "<p id=\"connection\"></p>\n";

  out += "<h2>Links</h2>\n<ul class=\"links\">\n";
  fmt::format_to(to,
                 R"(<li><a href="{metrics}">{metrics}</a>: Prometheus metrics</li>
<li><a href="/health">/health</a>: health document (HTTP 503 when the pool cannot serve)</li>
<li>/mcp: MCP endpoint (JSON-RPC 2.0 over POST; resources health://connection-pool and stats://connection-pool)</li>
)",
                 fmt::arg("metrics", html_escape(info.telemetry_path)));
  if (!info.prometheus_url.empty()) {
    fmt::format_to(
        to,
        R"(<li id="prometheus">Prometheus: <a href="{0}/classic/alerts">alerts</a>, <a href="{0}/classic/targets">targets</a>, <a href="{0}/graph">graph</a></li>
)",
        html_escape(info.prometheus_url));
  }
  if (!info.alertmanager_url.empty()) {
    fmt::format_to(to,
                   R"(<li id="alertmanager"><a href="{0}/">Alertmanager</a>: alerts, silences</li>
)",
                   html_escape(info.alertmanager_url));
  }
  if (!info.runbooks_url.empty()) {
    out += "<li id=\"runbooks\">Runbooks:";
    const char* separator = " ";
    for (const std::string_view alert : kAlerts) {
      fmt::format_to(to, R"({}<a href="{}/{}.md">{}</a>)", separator,
                     html_escape(info.runbooks_url), alert, alert);
      separator = ", ";
    }
    out += "</li>\n";
  }
  out += "</ul>\n";
  fmt::format_to(to, "<footer><p>poolscope exporter {}</p></footer>\n", html_escape(info.version));
  out += kRefreshScript;
  out += "</body>\n</html>\n";
  return out;
}

}  // namespace poolscope::exporter
