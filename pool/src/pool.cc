#include "poolscope/pool.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "log.h"
#include "pool_core.h"
#include "poolscope/error.h"

namespace poolscope {
namespace detail {
namespace {

using std::chrono::duration;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

double to_ms(Clock::duration d) { return duration<double, std::milli>(d).count(); }
double to_seconds(Clock::duration d) { return duration<double>(d).count(); }

// Far enough to mean "until notified", near enough not to overflow.
constexpr auto kIdleWait = std::chrono::hours(1);
// How often the maintainer looks at leaks, idle connections and the state.
constexpr auto kMaintenanceTick = milliseconds(250);

std::string describe_caller(void* address) {
  if (address == nullptr) return "";
  Dl_info info{};
  if (dladdr(address, &info) == 0) return fmt::format("{}", address);
  const char* object = info.dli_fname != nullptr ? info.dli_fname : "?";
  if (info.dli_sname == nullptr) {
    const auto offset = reinterpret_cast<std::uintptr_t>(address) -
                        reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    return fmt::format("{}+{:#x}", object, offset);
  }
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  std::free(demangled);
  const auto offset =
      reinterpret_cast<std::uintptr_t>(address) - reinterpret_cast<std::uintptr_t>(info.dli_saddr);
  return fmt::format("{}+{:#x} ({})", name, offset, object);
}

struct LeakReport {
  std::uint64_t id;
  double held_seconds;
  std::source_location site;
  void* caller;
  int backend_pid;
};

void log_leak(const std::string& pool, const LeakReport& leak, bool returned) {
  nlohmann::json stack = nlohmann::json::array();
  stack.push_back(fmt::format("{} at {}:{}", leak.site.function_name(), leak.site.file_name(),
                              leak.site.line()));
  if (const auto caller = describe_caller(leak.caller); !caller.empty()) stack.push_back(caller);
  const std::string id = fmt::format("conn_{}", leak.id);
  nlohmann::json context = {{"pool", pool},
                            {"connection_id", id},
                            {"held_duration_seconds", leak.held_seconds},
                            {"backend_pid", leak.backend_pid},
                            {"stack_trace", stack}};
  if (returned) {
    log(LogLevel::kInfo, fmt::format("Leaked connection returned: {}", id), context);
  } else {
    log(LogLevel::kWarning, fmt::format("Potential connection leak detected: {}", id), context);
  }
}

}  // namespace

PoolCore::PoolCore(PoolConfig config, std::shared_ptr<ConnectionFactory> factory,
                   std::shared_ptr<Clock> clock)
    : config_((config.validate(), std::move(config))),
      factory_(std::move(factory)),
      clock_(clock ? std::move(clock) : Clock::system()),
      created_at_(clock_->now()),
      created_wall_(clock_->wall_now()),
      jitter_(std::random_device{}()),
      window_(config_.health_window) {
  last_validated_ = created_at_;  // the first background check one interval after start
  min_size_ = config_.min_size;
  max_size_ = config_.max_size;
  if (!factory_) throw std::invalid_argument("poolscope::Pool needs a connection factory");
  idle_.reserve(config_.max_size);
  slots_.reserve(config_.max_size);
}

PoolCore::~PoolCore() { shutdown(); }

void PoolCore::start() {
  log(LogLevel::kInfo,
      fmt::format("Connection pool starting: min_size={}, max_size={}", config_.min_size,
                  config_.max_size),
      {{"pool", config_.name},
       {"min_size", config_.min_size},
       {"max_size", config_.max_size},
       {"database", factory_->describe()}});
  connector_ = std::thread([this] { connector_loop(); });
  maintainer_ = std::thread([this] { maintainer_loop(); });
}

// ---------------------------------------------------------------- acquire

Slot* PoolCore::acquire(std::chrono::milliseconds timeout, std::source_location site,
                        void* caller) {
  const Clock::time_point started = clock_->now();
  const Clock::time_point deadline = started + timeout;
  // One clock read on the fast path: when the lock is free, no time worth
  // measuring passes between `started` and holding it. Every pass that
  // follows a wait for the lock (or a connection closed on the way) reads
  // the clock again.
  Lock lock(mutex_, std::defer_lock);
  Clock::time_point now = started;
  bool now_is_fresh = lock.try_lock();
  if (!now_is_fresh) lock.lock();
  // Reads the clock unless `now` was read with the lock already held.
  auto refresh_now = [&]() POOLSCOPE_REQUIRES(mutex_) {
    if (now_is_fresh) return;
    now = clock_->now();
    now_is_fresh = true;
    // Earlier passes spent the time validating connections that failed, or
    // a nudged waiter ran only after its deadline.
    if (now >= deadline) {
      // A nudge it can no longer act on goes to the next in line.
      if (Waiter* next = nudge_waiter_locked()) next->cv.notify_one();
      throw_timeout_locked(lock, started, now);
    }
  };
  const bool barging = config_.queue_policy == QueuePolicy::kBarging;
  // Set when this caller left the queue to take an idle connection: it keeps
  // its right to one, and goes back to the head of the queue if it finds none.
  bool was_waiting = false;
  for (;;) {
    if (closing_) throw PoolClosed();

    // Fast path: a connection is idle and nobody queued before us, or the
    // barging policy lets us pass the queue (its head has not waited long,
    // or we were its head and were told to come and take one).
    bool take_idle = !idle_.empty() && (waiters_.empty() || was_waiting);
    if (!take_idle && barging && !idle_.empty()) {
      refresh_now();
      take_idle = now - waiters_.front()->started < config_.barging_wait_bound;
    }
    if (take_idle) {
      refresh_now();
      now_is_fresh = false;
      Slot* slot = idle_.back();
      idle_.pop_back();
      const auto idle_for = now - slot->last_used;
      if (idle_for > config_.validation_idle_threshold) {
        // Idle long enough that the server may have dropped it: one round
        // trip, outside the lock, before handing it out.
        ++validating_;
        lock.unlock();
        std::optional<std::string> failure;
        const auto check_started = clock_->now();
        try {
          // Never longer than the caller is still willing to wait.
          slot->connection->validate(std::chrono::ceil<milliseconds>(
              std::max(deadline - check_started, Clock::duration(0))));
        } catch (const std::exception& error) {
          failure = error.what();
        }
        now = clock_->now();
        lock.lock();
        --validating_;
        if (!failure) {
          last_health_check_ = now;
          last_health_check_wall_ = clock_->wall_now();
          last_latency_ms_ = to_ms(now - check_started);
        }
        if (failure || closing_) {
          if (failure) record_error_locked(ErrorType::kValidationFailed, *failure, now);
          if (closing_ && active_ == 0 && validating_ == 0) drained_cv_.notify_all();
          close_slot_unlocked(lock, slot,
                              failure ? CloseReason::kValidation : CloseReason::kShutdown);
          continue;
        }
      } else if (idle_for > config_.probe_idle_threshold && !slot->connection->probe()) {
        // Killed while idle (pg_terminate_backend, server restart): never
        // hand it out. A non-blocking poll, no round trip; under the lock
        // because the slot is not marked as lent yet. Skipped for a
        // connection whose last round trip ended less than
        // probe_idle_threshold ago: the system call costs more than the
        // query's own share of the pool, and a kill that lands inside that
        // window is the same as one that lands just after the probe.
        record_error_locked(ErrorType::kConnectionBroken,
                            "Idle connection was closed by the server", now);
        close_slot_unlocked(lock, slot, CloseReason::kBroken);
        continue;
      }
      if (now >= slot->expires_at) {
        close_slot_unlocked(lock, slot, CloseReason::kLifetime);
        continue;
      }
      lend_locked(slot, started, now, site, caller);
      // A former waiter passes the word on when more connections are idle.
      Waiter* pass_on = was_waiting ? nudge_waiter_locked() : nullptr;
      lock.unlock();
      // The core outlives this notify: the connection just lent keeps it.
      if (pass_on != nullptr) pass_on->cv.notify_one();
      notify_acquired(now - started);
      return slot;
    }

    // Slow path: queue up. Whoever frees or opens a connection hands it to
    // the first waiter, or (barging, while the first waiter is young) leaves
    // it idle and nudges the first waiter to come and take it; either way
    // waiters are served in arrival order.
    Waiter& waiter = checkout_waiter_locked();
    waiter.started = started;
    waiter.site = site;
    waiter.caller = caller;
    if (was_waiting) {
      waiters_.push_front(&waiter);  // it had been first in line
    } else {
      waiters_.push_back(&waiter);
    }
    was_waiting = false;
    now_is_fresh = false;
    if (connection_deficit_locked() > 0) connector_cv_.notify_one();
    if (Waiter* head = nudge_waiter_locked()) head->cv.notify_one();  // connections idle
    while (waiter.granted == nullptr && !waiter.closed) {
      if (waiter.nudged) {
        // A connection went idle: leave the queue and take it, unless
        // someone barged in first; then wait on at the same place.
        waiter.nudged = false;
        nudged_ = nullptr;
        if (!idle_.empty()) break;
      }
      if (clock_->wait_until(waiter.cv, lock, deadline) == std::cv_status::timeout &&
          waiter.granted == nullptr && !waiter.closed) {
        leave_queue_locked(waiter);
        // A nudge it can no longer act on goes to the next in line.
        if (Waiter* next = nudge_waiter_locked()) next->cv.notify_one();
        throw_timeout_locked(lock, started, clock_->now());
      }
    }
    if (waiter.granted == nullptr && !waiter.closed) {
      leave_queue_locked(waiter);
      was_waiting = true;
      continue;
    }
    const bool closed = waiter.closed;
    Slot* slot = waiter.granted;
    spare_waiters_.push_back(&waiter);
    if (closed) throw PoolClosed();
    const auto waited = slot->lent_at - started;
    lock.unlock();
    notify_acquired(waited);
    return slot;
  }
}

void PoolCore::close_slot_unlocked(Lock& lock, Slot* slot, CloseReason reason) {
  auto doomed = remove_slot_locked(slot, reason);
  if (connection_deficit_locked() > 0) connector_cv_.notify_one();
  lock.unlock();
  doomed.reset();  // closing may touch the network: never under the lock
  lock.lock();
}

void PoolCore::throw_timeout_locked(Lock& lock, Clock::time_point started, Clock::time_point now) {
  ++timeouts_;
  // While opening connections fails the pool cannot grow: the connection
  // error is the cause of the timeout, so it stays the last error and the
  // exception names it.
  std::optional<std::string> database_error;
  if (consecutive_failures_ > 0) database_error = last_error_;
  record_error_locked(
      ErrorType::kAcquireTimeout,
      database_error ? std::nullopt : std::optional<std::string>("Connection acquisition timeout"),
      now);
  auto snapshot = std::make_shared<const PoolStatistics>(statistics_locked(now));
  lock.unlock();
  throw AcquireTimeout(now - started, std::move(snapshot), std::move(database_error));
}

void PoolCore::lend_locked(Slot* slot, Clock::time_point started, Clock::time_point now,
                           const std::source_location& site, void* caller) {
  slot->lent = true;
  slot->lent_at = now;
  slot->site = site;
  slot->caller = caller;
  slot->leak_reported = false;
  slot->marked_broken.store(false, std::memory_order_relaxed);
  ++active_;
  ++acquisitions_;
  const double waited_ms = to_ms(now - started);
  acquisition_ms_sum_ += waited_ms;
  peak_wait_ms_ = std::max(peak_wait_ms_, waited_ms);
  peak_active_ = std::max(peak_active_, active_);
  // Waits that began during an outage were the outage's, not load's.
  window_.record_acquisition(
      now, started >= outage_ended_at_ ? std::optional<double>(waited_ms) : std::nullopt, active_);
}

Waiter& PoolCore::checkout_waiter_locked() {
  if (spare_waiters_.empty()) {
    waiter_store_.push_back(std::make_unique<Waiter>());
    // Every Waiter comes back to the spare list, on paths that must not
    // throw: make room for all of them now.
    spare_waiters_.reserve(waiter_store_.size());
    return *waiter_store_.back();
  }
  Waiter* waiter = spare_waiters_.back();
  spare_waiters_.pop_back();
  waiter->granted = nullptr;
  waiter->closed = false;
  waiter->nudged = false;
  return *waiter;
}

Waiter* PoolCore::hand_to_waiter_locked(Slot* slot, Clock::time_point now) {
  // With connections idle, the first waiter has been nudged to take one of
  // them; handing it this one as well would pass the others by.
  if (waiters_.empty() || !idle_.empty()) return nullptr;
  Waiter* waiter = waiters_.front();
  waiters_.pop_front();
  if (waiter == nudged_) nudged_ = nullptr;
  // The hand-over is accounted here, under the same lock as the release, so
  // no snapshot ever sees the connection as neither idle nor active.
  lend_locked(slot, waiter->started, now, waiter->site, waiter->caller);
  waiter->granted = slot;
  return waiter;
}

bool PoolCore::hand_off_due_locked(Clock::time_point now) const {
  if (waiters_.empty()) return false;
  if (config_.queue_policy == QueuePolicy::kFifo) return true;
  // Barging until the first waiter has waited the bound; from then on it is
  // served next, like Go's sync.Mutex in starvation mode.
  return now - waiters_.front()->started >= config_.barging_wait_bound;
}

Waiter* PoolCore::nudge_waiter_locked() {
  if (idle_.empty() || waiters_.empty() || nudged_ != nullptr) return nullptr;
  nudged_ = waiters_.front();
  nudged_->nudged = true;
  return nudged_;
}

void PoolCore::leave_queue_locked(Waiter& waiter) {
  waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &waiter));
  if (nudged_ == &waiter) nudged_ = nullptr;
  spare_waiters_.push_back(&waiter);
}

// ---------------------------------------------------------------- release

void PoolCore::release(Slot* slot) noexcept {
  const Clock::time_point now = clock_->now();
  // lent_at was written before the handle reached this thread; the core is
  // alive while the handle is out, so observers hear of it before the lock.
  const auto held = now - slot->lent_at;
  notify_released(held);
  // Both checks read libpq's local state only: no I/O.
  const bool broken =
      slot->marked_broken.load(std::memory_order_relaxed) || !slot->connection->is_open();
  const bool in_transaction = !broken && slot->connection->in_transaction();
  std::unique_ptr<Slot> doomed;
  std::optional<LeakReport> returned_leak;
  Waiter* wake = nullptr;
  bool pinned = false;
  bool last = false;
  {
    Lock lock(mutex_);
    slot->lent = false;
    slot->last_used = now;
    --active_;
    ++releases_;
    if (slot->leak_reported) {
      ++leaks_returned_;
      returned_leak = LeakReport{slot->id, to_seconds(held), slot->site, slot->caller,
                                 slot->connection->backend_pid()};
    }
    if (broken) {
      record_error_locked(ErrorType::kConnectionBroken, "Connection returned broken", now);
      doomed = remove_slot_locked(slot, CloseReason::kBroken);
    } else if (in_transaction) {
      record_error_locked(ErrorType::kTransactionLeftOpen,
                          "Connection returned inside an open transaction", now);
      doomed = remove_slot_locked(slot, CloseReason::kBroken);
    } else {
      last_good_release_ = now;
      if (closing_) {
        doomed = remove_slot_locked(slot, CloseReason::kShutdown);
      } else if (now >= slot->expires_at) {
        doomed = remove_slot_locked(slot, CloseReason::kLifetime);
      } else if (const auto unwanted = unwanted_locked(*slot)) {
        doomed = remove_slot_locked(slot, *unwanted);
      } else {
        if (hand_off_due_locked(now)) wake = hand_to_waiter_locked(slot, now);
        if (wake == nullptr) {
          // Barging: the connection stays free for whoever runs first, which
          // saves a thread wake-up per query; the first waiter hears of it.
          idle_.push_back(slot);
          wake = nudge_waiter_locked();
        }
      }
    }
    if (doomed && connection_deficit_locked() > 0) connector_cv_.notify_one();
    if (closing_ && active_ == 0 && validating_ == 0) drained_cv_.notify_all();
    // Work left for after the unlock pins the core, so that a Pool destroyed
    // meanwhile leaves it to us; without any, this release is done with it.
    pinned = wake != nullptr || doomed || returned_leak;
    if (pinned) ++pins_;
    last = unowned_locked();
  }
  if (last) {
    delete this;  // the Pool is gone and this was its last connection out
    return;
  }
  if (!pinned) return;
  if (wake != nullptr) wake->cv.notify_one();
  doomed.reset();  // closes the connection, outside the lock
  if (returned_leak) log_leak(config_.name, *returned_leak, true);
  {
    Lock lock(mutex_);
    --pins_;
    last = unowned_locked();
  }
  if (last) delete this;
}

void PoolCore::destroy(PoolCore* core) noexcept {
  core->shutdown();
  bool last = false;
  {
    Lock lock(core->mutex_);
    core->orphaned_ = true;
    last = core->unowned_locked();
  }
  // Otherwise the last release() of a connection still lent out deletes it.
  if (last) delete core;
}

std::unique_ptr<Slot> PoolCore::remove_slot_locked(Slot* slot, CloseReason reason) {
  ++closed_[static_cast<std::size_t>(reason)];
  auto it = std::find_if(slots_.begin(), slots_.end(), [slot](const std::unique_ptr<Slot>& owned) {
    return owned.get() == slot;
  });
  std::unique_ptr<Slot> owned = std::move(*it);
  *it = std::move(slots_.back());
  slots_.pop_back();
  return owned;
}

std::size_t PoolCore::connection_deficit_locked() const {
  if (closing_) return 0;
  const std::size_t wanted = std::min(max_size_, std::max(min_size_, active_ + waiters_.size()));
  const std::size_t have = slots_.size() + pending_;
  return wanted > have ? wanted - have : 0;
}

std::optional<CloseReason> PoolCore::unwanted_locked(const Slot& slot) const {
  if (slot.generation != generation_) return CloseReason::kDrain;
  if (slots_.size() > max_size_) return CloseReason::kResize;
  return std::nullopt;
}

void PoolCore::remove_unwanted_idle_locked(std::vector<std::unique_ptr<Slot>>& doomed) {
  // Oldest first; slots_ shrinks with every removal, so ask again each time.
  for (std::size_t i = 0; i < idle_.size();) {
    Slot* slot = idle_[i];
    const auto reason = unwanted_locked(*slot);
    if (!reason) {
      ++i;
      continue;
    }
    idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
    doomed.push_back(remove_slot_locked(slot, *reason));
  }
}

void PoolCore::fill_leak_snapshot_locked(PoolStatistics& s, Clock::time_point now) const {
  std::optional<Clock::time_point> oldest_lent;
  for (const auto& slot : slots_) {
    if (!slot->lent) continue;
    if (!oldest_lent || slot->lent_at < *oldest_lent) oldest_lent = slot->lent_at;
    if (!slot->leak_reported) continue;
    ++s.leaked_connections;
    const double held = to_seconds(now - slot->lent_at);
    const std::string_view file = slot->site.file_name();
    const std::uint32_t line = slot->site.line();
    const std::string_view function = slot->site.function_name();
    s.leaked.push_back(
        LeakedConnection{slot->id, held, std::string(file), line, std::string(function)});
    auto site = std::find_if(s.leak_sites.begin(), s.leak_sites.end(), [&](const LeakSite& known) {
      return known.line == line && known.file == file && known.function == function;
    });
    if (site == s.leak_sites.end()) {
      s.leak_sites.push_back(LeakSite{std::string(file), line, std::string(function), 0, 0.0});
      site = s.leak_sites.end() - 1;
    }
    ++site->connections;
    site->oldest_held_seconds = std::max(site->oldest_held_seconds, held);
  }
  if (oldest_lent) s.oldest_held_seconds = to_seconds(now - *oldest_lent);
  // Leaks are rare, so the lists are short before they are cut; when they are
  // not, the oldest leaks and the busiest sites are the ones worth reading.
  std::sort(s.leaked.begin(), s.leaked.end(),
            [](const auto& a, const auto& b) { return a.held_seconds > b.held_seconds; });
  if (s.leaked.size() > kMaxLeakedConnectionsReported)
    s.leaked.resize(kMaxLeakedConnectionsReported);
  std::sort(s.leak_sites.begin(), s.leak_sites.end(), [](const auto& a, const auto& b) {
    return a.connections != b.connections ? a.connections > b.connections
                                          : a.oldest_held_seconds > b.oldest_held_seconds;
  });
  if (s.leak_sites.size() > kMaxLeakSitesReported) s.leak_sites.resize(kMaxLeakSitesReported);
}

void PoolCore::record_error_locked(ErrorType type, const std::optional<std::string>& message,
                                   Clock::time_point now) {
  ++errors_[static_cast<std::size_t>(type)];
  window_.record_error(now);
  if (!message) return;  // counted; the last error stays the cause
  last_error_ = *message;
  last_error_wall_ = clock_->wall_now();
}

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

// ---------------------------------------------------------------- resize and drain

void PoolCore::set_max_size(std::size_t max_size) {
  if (max_size < 1 || max_size > kMaxPoolSize) {
    throw ConfigError("max_size", std::to_string(max_size),
                      fmt::format("expected a whole number from 1 to {}", kMaxPoolSize));
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
          fmt::format("must not be below min_size ({}); lower min_size first", min_size_));
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
          fmt::format("must not exceed max_size ({}); raise max_size first", max_size_));
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

// ---------------------------------------------------------------- observers

void PoolCore::add_observer(std::shared_ptr<PoolObserver> observer) {
  if (!observer) return;
  Lock lock(mutex_);
  const std::size_t count = observer_count_.load(std::memory_order_relaxed);
  std::size_t slot = 0;
  while (slot < count && observers_[slot].load(std::memory_order_relaxed) != nullptr) ++slot;
  if (slot == kMaxObservers) throw std::length_error("poolscope::Pool: too many observers");
  observers_[slot].store(observer.get(), std::memory_order_release);
  observer_owners_.push_back(std::move(observer));
  if (slot == count) observer_count_.store(count + 1, std::memory_order_release);
}

void PoolCore::remove_observer(const PoolObserver* observer) {
  Lock lock(mutex_);
  const std::size_t count = observer_count_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < count; ++i) {
    // The object stays alive in observer_owners_: a notify_* running right
    // now may still call it once.
    if (observers_[i].load(std::memory_order_relaxed) == observer) {
      observers_[i].store(nullptr, std::memory_order_release);
    }
  }
}

template <class Event>
void PoolCore::for_each_observer(Event event) noexcept {
  const std::size_t count = observer_count_.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < count; ++i) {
    if (PoolObserver* o = observers_[i].load(std::memory_order_acquire)) event(*o);
  }
}

void PoolCore::notify_acquired_observers(nanoseconds waited) noexcept {
  for_each_observer([&](PoolObserver& o) { o.on_acquired(waited); });
}

void PoolCore::notify_released_observers(nanoseconds held) noexcept {
  for_each_observer([&](PoolObserver& o) { o.on_released(held); });
}

void PoolCore::notify_created_observers(nanoseconds took) noexcept {
  for_each_observer([&](PoolObserver& o) { o.on_connection_created(took); });
}

}  // namespace detail

// ---------------------------------------------------------------- Pool facade

Pool::Pool(PoolConfig config)
    : Pool(config, std::shared_ptr<ConnectionFactory>(make_libpqxx_factory(config)),
           Clock::system()) {}

Pool::Pool(PoolConfig config, std::shared_ptr<ConnectionFactory> factory,
           std::shared_ptr<Clock> clock)
    : core_(new detail::PoolCore(std::move(config), std::move(factory), std::move(clock))) {
  try {
    core_->start();
  } catch (...) {
    detail::PoolCore::destroy(core_);
    throw;
  }
}

Pool::~Pool() { detail::PoolCore::destroy(core_); }

// noinline: the return address must be in the caller's code for leak reports.
__attribute__((noinline)) PooledConnection Pool::acquire(std::source_location site) {
  detail::Slot* slot =
      core_->acquire(core_->config().acquire_timeout, site, __builtin_return_address(0));
  return PooledConnection(core_, slot);
}

__attribute__((noinline)) PooledConnection Pool::acquire(std::chrono::milliseconds timeout,
                                                         std::source_location site) {
  detail::Slot* slot = core_->acquire(timeout, site, __builtin_return_address(0));
  return PooledConnection(core_, slot);
}

bool Pool::wait_until_ready() { return core_->wait_until_ready(); }
PoolStatistics Pool::get_statistics() const { return core_->statistics(); }
PoolState Pool::state() const noexcept { return core_->state(); }
void Pool::shutdown() { core_->shutdown(); }
void Pool::add_observer(std::shared_ptr<PoolObserver> observer) {
  core_->add_observer(std::move(observer));
}

void Pool::remove_observer(const PoolObserver* observer) { core_->remove_observer(observer); }
void Pool::set_max_size(std::size_t max_size) { core_->set_max_size(max_size); }
void Pool::set_min_size(std::size_t min_size) { core_->set_min_size(min_size); }
Pool::DrainResult Pool::drain() {
  const auto [closed_idle, replaced_later] = core_->drain();
  return DrainResult{closed_idle, replaced_later};
}
const PoolConfig& Pool::config() const noexcept { return core_->config(); }
HealthThresholds Pool::health_thresholds() const noexcept { return core_->health_thresholds(); }

}  // namespace poolscope
