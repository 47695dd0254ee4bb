#include "health_document.h"

#include <fmt/format.h>

#include <array>
#include <ctime>
#include <optional>

namespace poolscope::exporter {
namespace {

using nlohmann::json;

json optional_time(const std::optional<std::chrono::system_clock::time_point>& time) {
  return time ? json(iso8601_utc(*time)) : json(nullptr);
}

std::string site_of(const std::string& file, std::uint32_t line) {
  return fmt::format("{}:{}", file, line);
}

}  // namespace

json leak_document(const PoolStatistics& stats) {
  json connections = json::array();
  for (const LeakedConnection& leak : stats.leaked) {
    connections.push_back({{"id", fmt::format("conn_{}", leak.connection_id)},
                           {"held_seconds", leak.held_seconds},
                           {"site", site_of(leak.file, leak.line)},
                           {"function", leak.function}});
  }
  json sites = json::array();
  for (const LeakSite& site : stats.leak_sites) {
    sites.push_back({{"site", site_of(site.file, site.line)},
                     {"function", site.function},
                     {"connections", site.connections},
                     {"oldest_held_seconds", site.oldest_held_seconds}});
  }
  return json{{"count", stats.leaked_connections},
              {"oldest_held_seconds", stats.oldest_held_seconds},
              {"connections", std::move(connections)},
              {"sites", std::move(sites)}};
}

std::string iso8601_utc(std::chrono::system_clock::time_point time) {
  // floor (not duration_cast) so times before 1970 still get 0-999 ms.
  const auto seconds = std::chrono::floor<std::chrono::seconds>(time);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(time - seconds).count();
  const std::time_t calendar = std::chrono::system_clock::to_time_t(seconds);
  std::tm utc{};
  gmtime_r(&calendar, &utc);
  std::array<char, 32> date{};
  const std::size_t length = std::strftime(date.data(), date.size(), "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03d}Z", std::string_view(date.data(), length), millis);
}

std::string_view database_status(const PoolStatistics& stats) noexcept {
  switch (stats.state) {
    case PoolState::kInitializing:
      return "connecting";
    case PoolState::kRecovering:
      return "reconnecting";
    case PoolState::kShuttingDown:
      return "disconnecting";
    case PoolState::kTerminated:
      return "disconnected";
    case PoolState::kHealthy:
    case PoolState::kDegraded:
    case PoolState::kUnhealthy:
      break;
  }
  return stats.total_connections > 0 ? "connected" : "disconnected";
}

json health_document(const PoolStatistics& stats, std::chrono::system_clock::time_point now) {
  return json{
      {"status", to_string(stats.health)},
      {"timestamp", iso8601_utc(now)},
      {"database",
       {
           {"status", database_status(stats)},
           {"pool",
            {
                {"total", stats.total_connections},
                {"idle", stats.idle_connections},
                {"active", stats.active_connections},
                {"waiting", stats.waiting_requests},
            }},
           {"latency_ms", stats.last_validation_latency_ms ? json(*stats.last_validation_latency_ms)
                                                           : json(nullptr)},
           {"last_error", stats.last_error ? json(*stats.last_error) : json(nullptr)},
       }},
      {"leaks", leak_document(stats)},
      {"uptime_seconds", stats.uptime_seconds},
  };
}

json statistics_document(const PoolStatistics& stats) {
  json closed = json::object();
  for (std::size_t i = 0; i < kCloseReasonCount; ++i) {
    closed[std::string(to_string(static_cast<CloseReason>(i)))] = stats.connections_closed[i];
  }
  json errors = json::object();
  for (std::size_t i = 0; i < kErrorTypeCount; ++i) {
    errors[std::string(to_string(static_cast<ErrorType>(i)))] = stats.errors[i];
  }
  return json{
      {"pool_name", stats.pool_name},
      {"state", to_string(stats.state)},
      {"health", to_string(stats.health)},
      {"total_connections", stats.total_connections},
      {"idle_connections", stats.idle_connections},
      {"active_connections", stats.active_connections},
      {"waiting_requests", stats.waiting_requests},
      {"pending_connections", stats.pending_connections},
      {"leaked_connections", stats.leaked_connections},
      {"min_size", stats.min_size},
      {"max_size", stats.max_size},
      {"avg_acquisition_time_ms", stats.avg_acquisition_time_ms},
      {"peak_active_connections", stats.peak_active_connections},
      {"peak_wait_time_ms", stats.peak_wait_time_ms},
      {"recent_peak_active_connections", stats.recent_peak_active_connections},
      {"recent_peak_wait_time_ms", stats.recent_peak_wait_time_ms},
      {"recent_errors", stats.recent_errors},
      {"total_acquisitions", stats.total_acquisitions},
      {"total_releases", stats.total_releases},
      {"acquire_timeouts", stats.acquire_timeouts},
      {"connections_created", stats.connections_created},
      {"connection_failures", stats.connection_failures},
      {"reconnect_attempts", stats.reconnect_attempts},
      {"leaks_detected", stats.leaks_detected},
      {"leaks_returned", stats.leaks_returned},
      {"oldest_held_seconds", stats.oldest_held_seconds},
      {"leaks", leak_document(stats)},
      {"resizes", stats.resizes},
      {"drains", stats.drains},
      {"connections_closed", std::move(closed)},
      {"errors", std::move(errors)},
      {"pool_created_at", iso8601_utc(stats.pool_created_at)},
      {"last_health_check", optional_time(stats.last_health_check)},
      {"last_validation_latency_ms",
       stats.last_validation_latency_ms ? json(*stats.last_validation_latency_ms) : json(nullptr)},
      {"last_error", stats.last_error ? json(*stats.last_error) : json(nullptr)},
      {"last_error_time", optional_time(stats.last_error_time)},
      {"uptime_seconds", stats.uptime_seconds},
  };
}

}  // namespace poolscope::exporter
