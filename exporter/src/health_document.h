#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "poolscope/pool_statistics.h"

namespace poolscope::exporter {

/// The health document (the /health body and the MCP resource
/// `health://connection-pool`), built from one statistics snapshot:
///
///     {"status": "healthy"|"degraded"|"unhealthy",
///      "timestamp": "2025-10-13T14:30:00.000Z",
///      "database": {"status": …, "pool": {"total", "idle", "active", "waiting"},
///                   "latency_ms": <number>|null, "last_error": <string>|null},
///      "leaks": <leak_document()>,
///      "uptime_seconds": <number>}
///
/// `database.status` is "connected" when the pool has connections and is
/// serving, "connecting" while it opens its first connections, "reconnecting"
/// while it recovers from an outage, "disconnecting" while it shuts down and
/// "disconnected" when it has no connection or is terminated. `latency_ms` is
/// the round trip of the last background validation (null before the first);
/// nothing here queries the database. Pure function: safe from any thread.
nlohmann::json health_document(const PoolStatistics& stats,
                               std::chrono::system_clock::time_point now);

/// Every PoolStatistics field as JSON (the MCP statistics resource):
/// counters and gauges as numbers, `connections_closed` keyed by reason,
/// `errors` keyed by error type, `state`/`health` as strings and timestamps as
/// ISO-8601 UTC strings (null when unset). Pure function.
nlohmann::json statistics_document(const PoolStatistics& stats);

/// The connections held longer than the leak detection timeout, bounded:
///
///     {"count": <leaked now>, "oldest_held_seconds": <any held connection, 0 if none>,
///      "connections": [{"id": "conn_7", "held_seconds", "site": "file:line", "function"}],
///      "sites": [{"site", "function", "connections", "oldest_held_seconds"}]}
///
/// `connections` lists at most kMaxLeakedConnectionsReported of the oldest,
/// `sites` at most kMaxLeakSitesReported acquisition sites with the most
/// leaks; `count` is every leaked connection. Pure function.
nlohmann::json leak_document(const PoolStatistics& stats);

/// `database.status` of the health document for `stats` (see health_document()).
std::string_view database_status(const PoolStatistics& stats) noexcept;

/// "2025-10-13T14:30:00.123Z": ISO-8601 in UTC with milliseconds.
std::string iso8601_utc(std::chrono::system_clock::time_point time);

}  // namespace poolscope::exporter
