#include <fmt/format.h>

#include <algorithm>

#include "log.h"
#include "pool_core.h"
#include "pool_support.h"
#include "poolscope/error.h"

// Changes to a running pool: resize, drain, readiness and shutdown.

namespace poolscope::detail {

using std::chrono::duration;

// ---------------------------------------------------------------- resize and drain

void PoolCore::set_max_size(std::size_t max_size) {
  if (max_size < 1 || max_size > kMaxPoolSize) {
    throw ConfigError("max_size", std::to_string(max_size),
                      fmt::format("expected a whole number from 1 to {}", kMaxPoolSize),
                      "max_size");
  }
  std::vector<std::unique_ptr<Slot>> doomed;
  std::optional<std::pair<PoolState, PoolState>> transition;
  std::size_t previous = 0;
  {
    Lock lock(mutex_);
    if (closing_) throw PoolClosed();
    if (max_size < min_size_) {
      throw ConfigError(
          "max_size", std::to_string(max_size),
          fmt::format("must not be below min_size ({}); lower min_size first", min_size_),
          "max_size");
    }
    // release() puts connections back without allocating.
    slots_.reserve(max_size);
    idle_.reserve(max_size);
    previous = max_size_;
    max_size_ = max_size;
    ++resizes_;
    remove_unwanted_idle_locked(doomed);
    if (connection_deficit_locked() > 0) connector_cv_.notify_one();
    transition = update_state_locked(clock_->now());
  }
  log(LogLevel::kInfo, fmt::format("Pool max_size changed: {} -> {}", previous, max_size),
      {{"pool", config_.name},
       {"max_size", max_size},
       {"previous_max_size", previous},
       {"closed_idle", doomed.size()}});
  doomed.clear();
  if (transition) log_transition(config_.name, transition->first, transition->second);
}

void PoolCore::set_min_size(std::size_t min_size) {
  std::size_t previous = 0;
  {
    Lock lock(mutex_);
    if (closing_) throw PoolClosed();
    if (min_size > max_size_) {
      throw ConfigError(
          "min_size", std::to_string(min_size),
          fmt::format("must not exceed max_size ({}); raise max_size first", max_size_),
          "min_size");
    }
    previous = min_size_;
    min_size_ = min_size;
    ++resizes_;
    if (connection_deficit_locked() > 0) connector_cv_.notify_one();
  }
  log(LogLevel::kInfo, fmt::format("Pool min_size changed: {} -> {}", previous, min_size),
      {{"pool", config_.name}, {"min_size", min_size}, {"previous_min_size", previous}});
}

std::pair<std::size_t, std::size_t> PoolCore::drain() {
  std::vector<std::unique_ptr<Slot>> doomed;
  std::size_t later = 0;
  {
    Lock lock(mutex_);
    if (closing_) throw PoolClosed();
    ++drains_;
    ++generation_;
    remove_unwanted_idle_locked(doomed);
    // Lent out, or out for a validation: closed when they come back.
    later = slots_.size();
    if (connection_deficit_locked() > 0) connector_cv_.notify_one();
  }
  log(LogLevel::kInfo,
      fmt::format("Pool drained: {} idle connections closed, {} in use are replaced when returned",
                  doomed.size(), later),
      {{"pool", config_.name}, {"closed_idle", doomed.size()}, {"replaced_later", later}});
  const std::size_t closed = doomed.size();
  doomed.clear();
  return {closed, later};
}

bool PoolCore::wait_until_ready() {
  Lock lock(mutex_);
  while (!(initialized_ && initial_reported_) && !init_failed_ && !closing_) {
    clock_->wait_until(drained_cv_, lock, clock_->now() + kIdleWait);
  }
  return initialized_ && !closing_;
}

// ---------------------------------------------------------------- shutdown

void PoolCore::shutdown() {
  std::call_once(shutdown_once_, [this] {
    const Clock::time_point started = clock_->now();
    std::vector<std::unique_ptr<Slot>> doomed;
    std::optional<std::pair<PoolState, PoolState>> transition;
    std::size_t active = 0;
    {
      Lock lock(mutex_);
      closing_ = true;
      transition = update_state_locked(started);
      for (Waiter* waiter : waiters_) {
        waiter->closed = true;
        waiter->cv.notify_one();
      }
      waiters_.clear();
      nudged_ = nullptr;
      for (Slot* slot : idle_) doomed.push_back(remove_slot_locked(slot, CloseReason::kShutdown));
      idle_.clear();
      active = active_;
    }
    log(LogLevel::kInfo, "Graceful shutdown initiated", {{"pool", config_.name}});
    if (transition) log_transition(config_.name, transition->first, transition->second);
    doomed.clear();
    if (active > 0) {
      log(LogLevel::kInfo,
          fmt::format("Waiting for {} active connections to complete (timeout: {}s)", active,
                      duration<double>(config_.shutdown_timeout).count()),
          {{"pool", config_.name}});
    }
    std::size_t still_active = 0;
    {
      Lock lock(mutex_);
      const Clock::time_point deadline = started + config_.shutdown_timeout;
      while ((active_ > 0 || validating_ > 0) &&
             clock_->wait_until(drained_cv_, lock, deadline) != std::cv_status::timeout) {
      }
      still_active = active_;
      stopping_threads_ = true;
      connector_cv_.notify_all();
      maintainer_cv_.notify_all();
      drained_cv_.notify_all();
    }
    if (connector_.joinable()) connector_.join();
    if (maintainer_.joinable()) maintainer_.join();
    {
      Lock lock(mutex_);
      // Connections still lent out are closed when they come back.
      for (Slot* slot : idle_) doomed.push_back(remove_slot_locked(slot, CloseReason::kShutdown));
      idle_.clear();
      terminated_ = true;
      state_.store(PoolState::kTerminated, std::memory_order_release);
    }
    doomed.clear();
    const double took = to_seconds(clock_->now() - started);
    if (still_active == 0) {
      log(LogLevel::kInfo, fmt::format("All connections closed gracefully in {:.1f}s", took),
          {{"pool", config_.name}});
    } else {
      log(LogLevel::kWarning,
          fmt::format("Shutdown timeout: {} connections still active after {:.1f}s; they are "
                      "closed when returned",
                      still_active, took),
          {{"pool", config_.name}, {"active", still_active}});
    }
    log_transition(config_.name, PoolState::kShuttingDown, PoolState::kTerminated);
    log(LogLevel::kInfo, "Connection pool terminated", {{"pool", config_.name}});
  });
}

}  // namespace poolscope::detail
