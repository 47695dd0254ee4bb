#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "poolscope/pool_statistics.h"

namespace poolscope::exporter {

/// What the landing page shows besides the pool's state.
struct LandingPageInfo {
  std::string version;         ///< exporter version
  std::string telemetry_path;  ///< where the metrics are, e.g. "/metrics"
  /// Base URL of the runbooks (one `<AlertName>.md` per alert), no trailing slash.
  std::string runbooks_url;
  std::string prometheus_url;    ///< Prometheus base URL; "" = no Prometheus links
  std::string alertmanager_url;  ///< Alertmanager base URL; "" = no Alertmanager link
  /// How often the page reloads its content in the browser.
  std::chrono::seconds refresh_interval{5};
};

/// The HTML page at "/", the page an operator keeps open: the pool's state
/// (coloured by health), its gauges and counters, the connections held past
/// the leak timeout (the `leaks` list of `health` when it has one, else their
/// number), the last error, and links to the endpoints, the runbooks and,
/// when configured, Prometheus and Alertmanager. In a browser the page
/// re-fetches itself every `refresh_interval` and swaps in the new content
/// (without JavaScript it reloads through a meta refresh), and it says so when
/// the exporter stops answering. Every value is HTML-escaped. Pure function.
std::string render_landing_page(const LandingPageInfo& info, const PoolStatistics& stats,
                                const nlohmann::json& health, bool shutting_down);

/// `text` with &, <, >, " and ' replaced by HTML entities. Pure function.
std::string html_escape(std::string_view text);

}  // namespace poolscope::exporter
