#include "poolscope/pool_statistics.h"

namespace poolscope {

HealthStatus evaluate_health(const PoolStatistics& stats, const HealthThresholds& thresholds) {
  switch (stats.state) {
    case PoolState::kInitializing:
    case PoolState::kRecovering:
    case PoolState::kShuttingDown:
    case PoolState::kTerminated:
      return HealthStatus::kUnhealthy;
    default:
      break;
  }
  if (stats.total_connections == 0 || stats.max_size == 0) return HealthStatus::kUnhealthy;
  // Headroom against what the pool may still grow to, not idle/total: a
  // two-connection pool running one query has plenty of capacity left.
  const auto max_size = static_cast<double>(stats.max_size);
  const auto active = static_cast<double>(std::min(stats.active_connections, stats.max_size));
  const double headroom = (max_size - active) / max_size;
  if (headroom < thresholds.degraded_headroom) return HealthStatus::kUnhealthy;
  if (headroom < thresholds.healthy_headroom) return HealthStatus::kDegraded;
  if (stats.recent_errors > 0) return HealthStatus::kDegraded;
  if (stats.recent_peak_wait_time_ms > thresholds.degraded_wait_ms) return HealthStatus::kDegraded;
  return HealthStatus::kHealthy;
}

bool can_serve(const PoolStatistics& stats) noexcept {
  switch (stats.state) {
    case PoolState::kInitializing:
    case PoolState::kRecovering:
    case PoolState::kShuttingDown:
    case PoolState::kTerminated:
      return false;
    default:
      return stats.total_connections > 0;
  }
}

}  // namespace poolscope
