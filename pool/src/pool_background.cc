#include <fmt/format.h>

#include <algorithm>

#include "log.h"
#include "pool_core.h"
#include "pool_support.h"

// The two background threads: the connector opens connections (with backoff
// after failures) and the maintainer retires, validates and watches them.

namespace poolscope::detail {

using std::chrono::duration;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

namespace {
// How often the maintainer looks at leaks, idle connections and the state.
constexpr auto kMaintenanceTick = milliseconds(250);
}  // namespace

// ---------------------------------------------------------------- connector

std::chrono::milliseconds PoolCore::backoff_delay(std::uint64_t failures) const {
  const auto& steps = config_.reconnect_backoff;
  const std::size_t index =
      std::min<std::size_t>(failures == 0 ? 0 : failures - 1, steps.size() - 1);
  return steps[index];
}

Clock::time_point PoolCore::expiry_for(Clock::time_point created) {
  // Up to 10 % jitter so connections opened together do not expire together.
  const auto lifetime = duration_cast<nanoseconds>(config_.max_connection_lifetime);
  std::uniform_int_distribution<std::int64_t> spread(0, lifetime.count() / 10);
  return created + lifetime - nanoseconds(spread(jitter_));
}

void PoolCore::connector_loop() {
  Lock lock(mutex_);
  while (!stopping_threads_) {
    const Clock::time_point now = clock_->now();
    if (connection_deficit_locked() == 0) {
      clock_->wait_until(connector_cv_, lock, now + kIdleWait);
      continue;
    }
    if (consecutive_failures_ > 0 && now < next_connect_at_) {
      clock_->wait_until(connector_cv_, lock, next_connect_at_);
      continue;
    }
    if (consecutive_failures_ > 0) ++reconnects_;
    const std::uint64_t generation = generation_;
    ++pending_;
    lock.unlock();

    const Clock::time_point connect_started = clock_->now();
    std::unique_ptr<Connection> connection;
    std::string failure;
    try {
      connection = factory_->connect();
    } catch (const std::exception& error) {
      failure = error.what();
    } catch (...) {
      failure = "Database connection failed: unknown error";
    }
    const Clock::time_point connected = clock_->now();

    lock.lock();
    --pending_;
    // Not wanted any more: shutting down, max_size lowered meanwhile, or
    // opened with what a drain() during the connect meant to replace.
    if (connection && (closing_ || stopping_threads_ || generation != generation_ ||
                       slots_.size() >= max_size_)) {
      lock.unlock();
      connection.reset();
      lock.lock();
      continue;
    }
    std::vector<std::pair<PoolState, PoolState>> transitions;
    bool just_initialized = false;
    if (connection) {
      auto slot = std::make_unique<Slot>();
      slot->connection = std::move(connection);
      slot->id = next_id_++;
      slot->created_at = connected;
      slot->expires_at = expiry_for(connected);
      slot->last_used = connected;
      slot->generation = generation;
      Slot* raw = slot.get();
      const bool recovered = recovering_locked();
      slots_.push_back(std::move(slot));
      ++created_;
      last_health_check_ = connected;
      last_health_check_wall_ = clock_->wall_now();
      if (recovered) {
        // The outage is over: its errors and the waits it caused are
        // history, so the pool goes RECOVERING -> HEALTHY instead of
        // staying DEGRADED for the health window.
        window_.forget_outage();
        outage_ended_at_ = connected;
      }
      consecutive_failures_ = 0;
      // Likewise, waiting for the first connections of a starting pool is
      // start-up, not load.
      if (!initialized_) outage_ended_at_ = connected;
      Waiter* wake = hand_to_waiter_locked(raw, connected);
      if (wake == nullptr) idle_.push_back(raw);
      just_initialized = !initialized_ && slots_.size() >= min_size_;
      if (just_initialized) initialized_ = true;
      if (auto t = update_state_locked(connected)) transitions.push_back(*t);
      const std::size_t total = slots_.size();
      const std::size_t max_size = max_size_;
      lock.unlock();
      if (wake != nullptr) wake->cv.notify_one();
      notify_created(connected - connect_started);
      if (just_initialized) {
        log(LogLevel::kInfo,
            fmt::format("Connection pool initialized: created {} initial connections in {:.0f}ms",
                        total, to_ms(connected - created_at_)),
            {{"pool", config_.name}, {"connections", total}});
      }
      if (recovered) {
        log(LogLevel::kInfo,
            fmt::format("Connection pool recovered: {}/{} connections available", total, max_size),
            {{"pool", config_.name}});
      }
    } else {
      ++failures_;
      if (slots_.empty() && consecutive_failures_ == 0 && initialized_) {
        // The pool is UNHEALTHY when it has lost every connection, and
        // RECOVERING once a reconnection is scheduled.
        if (auto t = update_state_locked(connected)) transitions.push_back(*t);
      }
      ++consecutive_failures_;
      record_error_locked(ErrorType::kConnectionFailed, failure, connected);
      const auto delay = backoff_delay(consecutive_failures_);
      next_connect_at_ = connected + delay;
      const bool outage_started = slots_.empty() && consecutive_failures_ == 1;
      if (auto t = update_state_locked(connected)) transitions.push_back(*t);
      const std::uint64_t attempt = consecutive_failures_;
      const bool ever_connected = created_ > 0;
      lock.unlock();
      if (outage_started && ever_connected) {
        log(LogLevel::kWarning, fmt::format("Database connection lost: {}", failure),
            {{"pool", config_.name}});
      } else if (outage_started) {
        // Never connected: "lost" would be wrong; the failure says what is.
        log(LogLevel::kWarning, failure, {{"pool", config_.name}});
      } else {
        log(LogLevel::kWarning, fmt::format("Opening a connection failed: {}", failure),
            {{"pool", config_.name}});
      }
      // No "N/M": the pool retries until the database is back.
      log(LogLevel::kInfo,
          fmt::format("Reconnection attempt {} (delay: {}s)", attempt,
                      duration<double>(delay).count()),
          {{"pool", config_.name}, {"attempt", attempt}});
    }
    for (const auto& [from, to] : transitions) log_transition(config_.name, from, to);
    lock.lock();
    if (just_initialized) {
      // Ready once the initial connections have been reported to observers
      // and logged: metrics attached after wait_until_ready() never receive
      // a late report of a connection opened before them.
      initial_reported_ = true;
      drained_cv_.notify_all();
    }
  }
}

// ---------------------------------------------------------------- maintainer

void PoolCore::maintainer_loop() {
  Lock lock(mutex_);
  Clock::time_point next_tick = clock_->now();
  while (!stopping_threads_) {
    const Clock::time_point now = clock_->now();
    if (now < next_tick) {
      clock_->wait_until(maintainer_cv_, lock, next_tick);
      continue;
    }
    next_tick = now + kMaintenanceTick;
    lock.unlock();
    maintain_once(now);
    lock.lock();
  }
}

void PoolCore::maintain_once(Clock::time_point now) {
  std::vector<std::unique_ptr<Slot>> doomed;
  std::vector<LeakReport> leaks;
  std::optional<std::pair<PoolState, PoolState>> transition;
  bool validate = false;
  {
    Lock lock(mutex_);
    if (closing_) return;
    if (!initialized_ && !init_failed_ && now - created_at_ >= config_.init_timeout) {
      init_failed_ = true;
      // The connection error, if any, is the cause: it stays in the message.
      record_error_locked(ErrorType::kConnectionFailed,
                          last_error_ ? "Pool initialization timeout: " + *last_error_
                                      : "Pool initialization timeout",
                          now);
      drained_cv_.notify_all();
    }
    // Oldest idle first (idle_ is a stack). Lifetime applies to all idle
    // connections, idleness only above min_size.
    for (std::size_t i = 0; i < idle_.size();) {
      Slot* slot = idle_[i];
      std::optional<CloseReason> reason;
      if (now >= slot->expires_at) {
        reason = CloseReason::kLifetime;
      } else if (slots_.size() > min_size_ && now - slot->last_used >= config_.max_idle_time) {
        reason = CloseReason::kIdle;
      }
      if (!reason) {
        ++i;
        continue;
      }
      idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
      doomed.push_back(remove_slot_locked(slot, *reason));
    }
    // Connections validated during a resize or drain come back to idle_.
    remove_unwanted_idle_locked(doomed);
    if (config_.enable_leak_detection) {
      for (const auto& slot : slots_) {
        if (slot->lent && !slot->leak_reported &&
            now - slot->lent_at >= config_.leak_detection_timeout) {
          slot->leak_reported = true;
          ++leaks_detected_;
          leaks.push_back(LeakReport{slot->id, to_seconds(now - slot->lent_at), slot->site,
                                     slot->caller, slot->connection->backend_pid()});
        }
      }
    }
    if (now - last_validated_ >= config_.health_check_interval) {
      last_validated_ = now;
      validate = true;
    }
    transition = update_state_locked(now);
    if (connection_deficit_locked() > 0) connector_cv_.notify_one();
  }
  doomed.clear();
  for (const auto& leak : leaks) log_leak(config_.name, leak, false);
  if (transition) log_transition(config_.name, transition->first, transition->second);
  if (validate) validate_idle_connections(now, false);
}

void PoolCore::validate_idle_connections(Clock::time_point now, bool all) {
  std::vector<Slot*> candidates;
  {
    Lock lock(mutex_);
    if (closing_) return;
    // The least recently used idle connection: one SELECT 1 per interval
    // keeps latency_ms fresh and notices an outage without traffic.
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (all || candidates.empty()) {
        candidates.push_back(*it);
        it = idle_.erase(it);
      } else {
        ++it;
      }
    }
    if (candidates.empty()) {
      // A busy pool has no idle connection to probe; a connection that came
      // back healthy since the last check is evidence enough.
      if (last_good_release_ &&
          (!last_health_check_ || *last_good_release_ > *last_health_check_)) {
        last_health_check_ = *last_good_release_;
        last_health_check_wall_ =
            clock_->wall_now() -
            duration_cast<std::chrono::system_clock::duration>(now - *last_good_release_);
      }
      return;
    }
    validating_ += candidates.size();
  }
  bool any_failed = false;
  for (Slot* slot : candidates) {
    const Clock::time_point started = clock_->now();
    std::optional<std::string> failure;
    try {
      slot->connection->validate(config_.init_timeout);
    } catch (const std::exception& error) {
      failure = error.what();
    }
    const Clock::time_point finished = clock_->now();
    std::unique_ptr<Slot> doomed;
    Waiter* wake = nullptr;
    {
      Lock lock(mutex_);
      --validating_;
      if (failure) {
        any_failed = true;
        record_error_locked(ErrorType::kValidationFailed, *failure, finished);
        doomed = remove_slot_locked(slot, CloseReason::kValidation);
      } else if (closing_) {
        doomed = remove_slot_locked(slot, CloseReason::kShutdown);
      } else if (const auto unwanted = unwanted_locked(*slot)) {
        doomed = remove_slot_locked(slot, *unwanted);
      } else {
        last_health_check_ = finished;
        last_health_check_wall_ = clock_->wall_now();
        last_latency_ms_ = to_ms(finished - started);
        slot->last_used = finished;
        wake = hand_to_waiter_locked(slot, finished);
        if (wake == nullptr) idle_.insert(idle_.begin(), slot);
      }
      if (closing_ && active_ == 0 && validating_ == 0) drained_cv_.notify_all();
      if (connection_deficit_locked() > 0) connector_cv_.notify_one();
    }
    if (wake != nullptr) wake->cv.notify_one();
    if (failure) {
      log(LogLevel::kWarning, *failure,
          {{"pool", config_.name}, {"connection_id", fmt::format("conn_{}", slot->id)}});
    }
  }
  if (!any_failed) return;
  // One dead connection usually means the server went away: check the rest
  // now instead of handing them out one by one.
  if (!all) validate_idle_connections(clock_->now(), true);
  // Losing connections can change the state (down to RECOVERING); say so
  // now rather than at the next tick.
  std::optional<std::pair<PoolState, PoolState>> transition;
  {
    Lock lock(mutex_);
    if (!closing_) transition = update_state_locked(clock_->now());
  }
  if (transition) log_transition(config_.name, transition->first, transition->second);
}

}  // namespace poolscope::detail
