#include <fmt/format.h>

#include <algorithm>

#include "log.h"
#include "pool_core.h"
#include "pool_support.h"

// The pool state machine and statistics snapshots.

namespace poolscope::detail {

// ---------------------------------------------------------------- state

PoolState PoolCore::evaluate_state_locked(const PoolStatistics& load) const {
  if (terminated_) return PoolState::kTerminated;
  if (closing_) return PoolState::kShuttingDown;
  if (!initialized_ && !init_failed_) return PoolState::kInitializing;
  if (recovering_locked()) return PoolState::kRecovering;
  PoolStatistics judged = load;
  judged.state = PoolState::kHealthy;  // judge load and errors only
  switch (evaluate_health(judged, health_thresholds())) {
    case HealthStatus::kHealthy:
      return PoolState::kHealthy;
    case HealthStatus::kDegraded:
      return PoolState::kDegraded;
    case HealthStatus::kUnhealthy:
      return PoolState::kUnhealthy;
  }
  return PoolState::kUnhealthy;
}

HealthThresholds PoolCore::health_thresholds() const noexcept {
  return HealthThresholds{config_.healthy_headroom, config_.degraded_headroom,
                          to_ms(config_.degraded_wait_threshold)};
}

std::optional<std::pair<PoolState, PoolState>> PoolCore::update_state_locked(
    Clock::time_point now) {
  return store_state_locked(statistics_locked(now).state);
}

std::optional<std::pair<PoolState, PoolState>> PoolCore::store_state_locked(PoolState next) {
  const PoolState previous = state_.load(std::memory_order_relaxed);
  if (next == previous) return std::nullopt;
  state_.store(next, std::memory_order_release);
  return std::make_pair(previous, next);
}

void PoolCore::log_transition(const std::string& pool, PoolState from, PoolState to) {
  auto upper = [](std::string_view name) {
    std::string out(name);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return std::toupper(c); });
    return out;
  };
  const LogLevel level = (to == PoolState::kUnhealthy || to == PoolState::kRecovering)
                             ? LogLevel::kWarning
                             : LogLevel::kInfo;
  log(level, fmt::format("Health status: {} -> {}", upper(to_string(from)), upper(to_string(to))),
      {{"pool", pool}, {"from", to_string(from)}, {"to", to_string(to)}});
}

// ---------------------------------------------------------------- statistics

PoolStatistics PoolCore::statistics() {
  const Clock::time_point now = clock_->now();
  Lock lock(mutex_);
  PoolStatistics s = statistics_locked(now);
  // A snapshot that sees a new state makes it the pool's state, so state(),
  // the log and every snapshot agree.
  const auto transition = closing_ ? std::nullopt : store_state_locked(s.state);
  lock.unlock();
  if (transition) log_transition(config_.name, transition->first, transition->second);
  return s;
}

PoolStatistics PoolCore::statistics_locked(Clock::time_point now) const {
  PoolStatistics s;
  s.pool_name = config_.name;
  s.total_connections = slots_.size();
  s.idle_connections = idle_.size() + validating_;
  s.active_connections = active_;
  s.waiting_requests = waiters_.size();
  s.pending_connections = pending_;
  fill_leak_snapshot_locked(s, now);
  s.min_size = min_size_;
  s.max_size = max_size_;
  s.avg_acquisition_time_ms =
      acquisitions_ == 0 ? 0.0 : acquisition_ms_sum_ / static_cast<double>(acquisitions_);
  s.peak_active_connections = peak_active_;
  s.peak_wait_time_ms = peak_wait_ms_;
  const auto recent = window_.summarize(now);
  s.recent_peak_active_connections = std::max(recent.peak_active, active_);
  s.recent_peak_wait_time_ms = recent.peak_wait_ms;
  s.recent_errors = recent.errors;
  s.total_acquisitions = acquisitions_;
  s.total_releases = releases_;
  s.acquire_timeouts = timeouts_;
  s.connections_created = created_;
  s.connection_failures = failures_;
  s.reconnect_attempts = reconnects_;
  s.leaks_detected = leaks_detected_;
  s.leaks_returned = leaks_returned_;
  s.resizes = resizes_;
  s.drains = drains_;
  s.connections_closed = closed_;
  s.errors = errors_;
  s.pool_created_at = created_wall_;
  if (last_health_check_) s.last_health_check = last_health_check_wall_;
  s.last_validation_latency_ms = last_latency_ms_;
  s.last_error = last_error_;
  if (last_error_) s.last_error_time = last_error_wall_;
  // State and health come from this one evaluation of this one snapshot.
  s.state = evaluate_state_locked(s);
  s.health = evaluate_health(s, health_thresholds());
  s.uptime_seconds = to_seconds(now - created_at_);
  return s;
}

}  // namespace poolscope::detail
