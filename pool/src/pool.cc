#include "poolscope/pool.h"

#include <fmt/format.h>

#include <algorithm>

#include "log.h"
#include "pool_core.h"
#include "pool_support.h"
#include "poolscope/error.h"

// The acquire/release path, the waiter queue and the observers, kept in one
// file so the hot path inlines its helpers. The background threads, leak
// reporting, state and statistics, resize/drain and shutdown are in pool_*.cc.

namespace poolscope {
namespace detail {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

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

void PoolCore::record_error_locked(ErrorType type, const std::optional<std::string>& message,
                                   Clock::time_point now) {
  ++errors_[static_cast<std::size_t>(type)];
  window_.record_error(now);
  if (!message) return;  // counted; the last error stays the cause
  last_error_ = *message;
  last_error_wall_ = clock_->wall_now();
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

Pool::Pool(const PoolConfig& config)
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
  return {core_, slot};
}

__attribute__((noinline)) PooledConnection Pool::acquire(std::chrono::milliseconds timeout,
                                                         std::source_location site) {
  detail::Slot* slot = core_->acquire(timeout, site, __builtin_return_address(0));
  return {core_, slot};
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
