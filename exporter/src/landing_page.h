#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "poolscope/pool_statistics.h"

namespace poolscope::exporter {

/// What the landing page shows besides the pool's state.
struct LandingPageInfo {
  std::string version;         ///< exporter version
  std::string telemetry_path;  ///< where the metrics are, e.g. "/metrics"
};

/// The small HTML page at "/": links to the metrics, /health and /mcp, and
/// the pool's current state and connection counts. Every value is
/// HTML-escaped. Pure function.
std::string render_landing_page(const LandingPageInfo& info, const PoolStatistics& stats,
                                bool shutting_down);

/// `text` with &, <, >, " and ' replaced by HTML entities. Pure function.
std::string html_escape(std::string_view text);

}  // namespace poolscope::exporter
