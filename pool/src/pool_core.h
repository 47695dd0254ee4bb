#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <source_location>
#include <string>
#include <thread>
#include <vector>

#include "poolscope/clock.h"
#include "poolscope/connection.h"
#include "poolscope/pool_config.h"
#include "poolscope/pool_observer.h"
#include "poolscope/pool_statistics.h"
#include "poolscope/pooled_connection.h"
#include "stats_window.h"
#include "thread_annotations.h"

namespace poolscope::detail {

/// One open connection and what the pool knows about it. Owned by
/// PoolCore::slots_; a PooledConnection points at it while it is lent out.
struct Slot {
  std::unique_ptr<Connection> connection;
  std::uint64_t id = 0;
  Clock::time_point created_at{};
  Clock::time_point expires_at{};  ///< created_at + lifetime - jitter
  Clock::time_point last_used{};   ///< last release (or creation)
  std::uint64_t generation = 0;    ///< PoolCore::generation_ when opened; older ones are drained

  // Set while lent out (guarded by the pool mutex, read by the holder only
  // through the handle).
  bool lent = false;
  Clock::time_point lent_at{};
  std::source_location site{};
  void* caller = nullptr;  ///< return address in the caller of acquire()
  bool leak_reported = false;
  std::atomic<bool> marked_broken{false};
};

/// A thread blocked in acquire(). The pool owns every Waiter for its whole
/// life and reuses them, so the thread that hands a connection over (by
/// setting `granted` and accounting for it under the mutex) can notify after
/// unlocking: the woken thread then finds the mutex free instead of waking
/// only to block on it. A late notify that reaches a reused Waiter is a
/// spurious wake-up, which every wait loop tolerates.
struct Waiter {
  std::condition_variable cv;
  Slot* granted = nullptr;
  bool closed = false;
  /// Barging policy: a connection went idle while this waiter was first in
  /// line; it may leave the queue and take an idle connection.
  bool nudged = false;
  Clock::time_point started{};
  std::source_location site{};
  void* caller = nullptr;
};

/// The shared state of a Pool. The Pool owns it; handles point at it without a
/// reference count (none is needed while the Pool lives, and an atomic count per
/// borrow would cost more than the rest of the bookkeeping). When the Pool is
/// destroyed with connections still lent out, the core is left orphaned and
/// the last release() deletes it, so a connection returned after the Pool
/// object is gone still finds its pool. For that, nothing in release() touches
/// the core after its unlock unless it pinned the core first (pins_).
/// Thread-safe: one mutex (mutex_) guards everything below it; counters that
/// are read without it are atomics.
class PoolCore {
 public:
  PoolCore(PoolConfig config, std::shared_ptr<ConnectionFactory> factory,
           std::shared_ptr<Clock> clock);
  ~PoolCore();

  void start();
  /// Shuts `core` down and deletes it, now or (connections still lent out)
  /// at the last release. Called by ~Pool instead of delete.
  static void destroy(PoolCore* core) noexcept;
  /// The slot is lent to the caller, who wraps it in a PooledConnection.
  Slot* acquire(std::chrono::milliseconds timeout, std::source_location site, void* caller);
  void release(Slot* slot) noexcept;
  bool wait_until_ready();
  PoolStatistics statistics();
  PoolState state() const noexcept { return state_.load(std::memory_order_acquire); }
  void shutdown();
  void add_observer(std::shared_ptr<PoolObserver> observer);
  void remove_observer(const PoolObserver* observer);
  const PoolConfig& config() const noexcept { return config_; }
  /// Health thresholds from the configuration.
  HealthThresholds health_thresholds() const noexcept;
  void set_max_size(std::size_t max_size);
  void set_min_size(std::size_t min_size);
  std::pair<std::size_t, std::size_t> drain();  // closed idle, lent out to replace later

 private:
  static constexpr std::size_t kMaxObservers = 8;

  using Lock = UniqueLock;

  // --- under mutex_ ---
  // These two release `lock` (which holds mutex_) in their bodies; the
  // analysis cannot tie a lock passed by reference to mutex_, so their
  // bodies are not checked, while their callers are.
  /// Removes `slot` (counted under `reason`), asks for a replacement if
  /// needed and closes it with the lock released; returns with it held.
  void close_slot_unlocked(Lock& lock, Slot* slot, CloseReason reason)
      POOLSCOPE_REQUIRES(mutex_) POOLSCOPE_NO_THREAD_SAFETY_ANALYSIS;
  /// Counts the timeout, releases the lock and throws AcquireTimeout.
  [[noreturn]] void throw_timeout_locked(Lock& lock, Clock::time_point started,
                                         Clock::time_point now)
      POOLSCOPE_REQUIRES(mutex_) POOLSCOPE_NO_THREAD_SAFETY_ANALYSIS;
  void lend_locked(Slot* slot, Clock::time_point started, Clock::time_point now,
                   const std::source_location& site, void* caller) POOLSCOPE_REQUIRES(mutex_);
  /// Lends `slot` to the first waiter and returns it, to be notified once
  /// the lock is released; nullptr when nobody waits or connections are idle
  /// (the first waiter has then been nudged to take one).
  Waiter* hand_to_waiter_locked(Slot* slot, Clock::time_point now) POOLSCOPE_REQUIRES(mutex_);
  /// Whether a connection returned at `now` goes straight to the first
  /// waiter rather than to the idle list.
  bool hand_off_due_locked(Clock::time_point now) const POOLSCOPE_REQUIRES(mutex_);
  /// Barging policy: an idle connection and a waiter with no nudge on its
  /// way yet. Marks the first waiter and returns it, to be notified once the
  /// lock is released; otherwise nullptr.
  Waiter* nudge_waiter_locked() POOLSCOPE_REQUIRES(mutex_);
  /// Takes `waiter` out of the queue and back to the spare list.
  void leave_queue_locked(Waiter& waiter) POOLSCOPE_REQUIRES(mutex_);
  Waiter& checkout_waiter_locked() POOLSCOPE_REQUIRES(mutex_);
  std::unique_ptr<Slot> remove_slot_locked(Slot* slot, CloseReason reason)
      POOLSCOPE_REQUIRES(mutex_);
  std::size_t connection_deficit_locked() const POOLSCOPE_REQUIRES(mutex_);
  /// Why an idle or returning connection must not be lent out again after a
  /// resize or drain; nullopt when it may be.
  std::optional<CloseReason> unwanted_locked(const Slot& slot) const POOLSCOPE_REQUIRES(mutex_);
  /// Removes idle connections above max_size_ or from before the last drain;
  /// the caller closes them after unlocking.
  void remove_unwanted_idle_locked(std::vector<std::unique_ptr<Slot>>& doomed)
      POOLSCOPE_REQUIRES(mutex_);
  void fill_leak_snapshot_locked(PoolStatistics& s, Clock::time_point now) const
      POOLSCOPE_REQUIRES(mutex_);
  /// The Pool is gone and no connection or release still needs the core.
  bool unowned_locked() const POOLSCOPE_REQUIRES(mutex_) {
    return orphaned_ && active_ == 0 && pins_ == 0;
  }
  /// No connection is open and opening one keeps failing.
  bool recovering_locked() const POOLSCOPE_REQUIRES(mutex_) {
    return slots_.empty() && consecutive_failures_ > 0;
  }
  /// Counts an error of `type`; a `message` also becomes the last error.
  void record_error_locked(ErrorType type, const std::optional<std::string>& message,
                           Clock::time_point now) POOLSCOPE_REQUIRES(mutex_);
  PoolStatistics statistics_locked(Clock::time_point now) const POOLSCOPE_REQUIRES(mutex_);
  /// The state `load` (counters of a snapshot taken under the lock) implies.
  PoolState evaluate_state_locked(const PoolStatistics& load) const POOLSCOPE_REQUIRES(mutex_);
  // Moves the state and returns the log line to write once the lock is gone.
  std::optional<std::pair<PoolState, PoolState>> update_state_locked(Clock::time_point now)
      POOLSCOPE_REQUIRES(mutex_);
  std::optional<std::pair<PoolState, PoolState>> store_state_locked(PoolState next)
      POOLSCOPE_REQUIRES(mutex_);
  std::chrono::milliseconds backoff_delay(std::uint64_t failures) const;
  Clock::time_point expiry_for(Clock::time_point created) POOLSCOPE_REQUIRES(mutex_);

  // --- background threads ---
  void connector_loop();
  void maintainer_loop();
  void maintain_once(Clock::time_point now);
  void validate_idle_connections(Clock::time_point now, bool all);

  // --- helpers without the lock ---
  // Inline when no observer is attached (the common case without metrics):
  // one atomic load, no call.
  void notify_acquired(std::chrono::nanoseconds waited) noexcept {
    if (observer_count_.load(std::memory_order_acquire) != 0) notify_acquired_observers(waited);
  }
  void notify_released(std::chrono::nanoseconds held) noexcept {
    if (observer_count_.load(std::memory_order_acquire) != 0) notify_released_observers(held);
  }
  void notify_created(std::chrono::nanoseconds took) noexcept {
    if (observer_count_.load(std::memory_order_acquire) != 0) notify_created_observers(took);
  }
  void notify_acquired_observers(std::chrono::nanoseconds waited) noexcept;
  void notify_released_observers(std::chrono::nanoseconds held) noexcept;
  void notify_created_observers(std::chrono::nanoseconds took) noexcept;
  template <class Event>
  void for_each_observer(Event event) noexcept;
  static void log_transition(const std::string& pool, PoolState from, PoolState to);
  static void close_all(std::vector<std::unique_ptr<Slot>>& slots) noexcept;

  const PoolConfig config_;
  const std::shared_ptr<ConnectionFactory> factory_;
  const std::shared_ptr<Clock> clock_;
  const Clock::time_point created_at_;
  const std::chrono::system_clock::time_point created_wall_;

  // Lock-free reads on the hot path; slots freed by remove_observer are reused.
  std::array<std::atomic<PoolObserver*>, kMaxObservers> observers_{};
  // Every observer ever added, kept alive for the pool's lifetime (a removed
  // one may still be running in a notify_* call). Guarded by mutex_.
  std::vector<std::shared_ptr<PoolObserver>> observer_owners_;
  std::atomic<std::size_t> observer_count_{0};
  std::atomic<PoolState> state_{PoolState::kInitializing};

  mutable Mutex mutex_;
  std::condition_variable connector_cv_;   // work for the connector
  std::condition_variable maintainer_cv_;  // stop for the maintainer
  std::condition_variable drained_cv_;     // active reached 0 / ready changed
  std::vector<std::unique_ptr<Slot>> slots_ POOLSCOPE_GUARDED_BY(mutex_);
  std::vector<Slot*> idle_ POOLSCOPE_GUARDED_BY(mutex_);      // LIFO: hot connections stay hot
  std::deque<Waiter*> waiters_ POOLSCOPE_GUARDED_BY(mutex_);  // FIFO
  // Barging: the waiter told that a connection went idle, until it acts on
  // it. One at a time, so a burst of releases wakes one thread, not many.
  Waiter* nudged_ POOLSCOPE_GUARDED_BY(mutex_) = nullptr;
  std::vector<std::unique_ptr<Waiter>> waiter_store_ POOLSCOPE_GUARDED_BY(mutex_);
  std::vector<Waiter*> spare_waiters_ POOLSCOPE_GUARDED_BY(mutex_);
  std::size_t active_ POOLSCOPE_GUARDED_BY(mutex_) = 0;
  std::size_t validating_ POOLSCOPE_GUARDED_BY(mutex_) = 0;  // idle, out for SELECT 1
  std::size_t pending_ POOLSCOPE_GUARDED_BY(mutex_) = 0;     // being opened
  std::uint64_t next_id_ POOLSCOPE_GUARDED_BY(mutex_) = 1;
  // The sizes in force: config_'s at start, then set_min_size()/set_max_size().
  std::size_t min_size_ POOLSCOPE_GUARDED_BY(mutex_);
  std::size_t max_size_ POOLSCOPE_GUARDED_BY(mutex_);
  // Bumped by drain(); connections opened before the bump are recycled.
  std::uint64_t generation_ POOLSCOPE_GUARDED_BY(mutex_) = 0;
  bool closing_ POOLSCOPE_GUARDED_BY(mutex_) = false;
  bool stopping_threads_ POOLSCOPE_GUARDED_BY(mutex_) = false;
  bool initialized_ POOLSCOPE_GUARDED_BY(mutex_) = false;       // min_size reached once
  bool initial_reported_ POOLSCOPE_GUARDED_BY(mutex_) = false;  // ...and told observers
  bool init_failed_ POOLSCOPE_GUARDED_BY(mutex_) = false;       // init timeout passed first
  bool terminated_ POOLSCOPE_GUARDED_BY(mutex_) = false;
  bool orphaned_ POOLSCOPE_GUARDED_BY(mutex_) = false;  // the Pool was destroyed
  std::size_t pins_ POOLSCOPE_GUARDED_BY(mutex_) = 0;   // releases still at work unlocked
  std::uint64_t consecutive_failures_ POOLSCOPE_GUARDED_BY(mutex_) = 0;
  Clock::time_point next_connect_at_ POOLSCOPE_GUARDED_BY(mutex_){};
  Clock::time_point last_validated_ POOLSCOPE_GUARDED_BY(mutex_){};
  // Waits that began before this (an outage, start-up) are not load.
  Clock::time_point outage_ended_at_ POOLSCOPE_GUARDED_BY(mutex_){};
  std::mt19937_64 jitter_ POOLSCOPE_GUARDED_BY(mutex_);

  // Statistics (guarded by mutex_ so that every snapshot is consistent).
  StatsWindow window_ POOLSCOPE_GUARDED_BY(mutex_);
  std::uint64_t acquisitions_ = 0, releases_ = 0, timeouts_ = 0, created_ = 0, failures_ = 0,
                reconnects_ = 0, leaks_detected_ = 0, leaks_returned_ = 0, resizes_ = 0,
                drains_ = 0;
  double acquisition_ms_sum_ = 0.0, peak_wait_ms_ = 0.0;
  std::size_t peak_active_ = 0;
  std::array<std::uint64_t, kCloseReasonCount> closed_{};
  std::array<std::uint64_t, kErrorTypeCount> errors_{};
  std::optional<Clock::time_point> last_health_check_;
  std::chrono::system_clock::time_point last_health_check_wall_{};
  std::optional<Clock::time_point> last_good_release_;
  std::optional<double> last_latency_ms_;
  std::optional<std::string> last_error_;
  std::chrono::system_clock::time_point last_error_wall_{};

  std::thread connector_;
  std::thread maintainer_;
  std::once_flag shutdown_once_;
};

}  // namespace poolscope::detail
