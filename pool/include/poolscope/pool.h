#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <source_location>

#include "poolscope/clock.h"
#include "poolscope/connection.h"
#include "poolscope/error.h"
#include "poolscope/pool_config.h"
#include "poolscope/pool_observer.h"
#include "poolscope/pool_statistics.h"
#include "poolscope/pooled_connection.h"

namespace poolscope {

namespace detail {
class PoolCore;
}

/// A PostgreSQL connection pool that watches itself.
///
/// Thread-safe: no concurrent call causes a data race. The constructor returns
/// at once and opens min_size connections in the background (state
/// INITIALIZING); wait_until_ready() waits for that. Connections are opened,
/// validated and closed by the pool's own threads, never under the pool lock.
/// Waiters are served strictly first-come first-served.
class Pool {
 public:
  /// A pool on config.database_url through libpqxx, with the real clock.
  /// Throws ConfigError when the configuration is invalid.
  explicit Pool(const PoolConfig& config);

  /// A pool with an injected connection factory and clock (tests, custom drivers).
  Pool(PoolConfig config, std::shared_ptr<ConnectionFactory> factory, std::shared_ptr<Clock> clock);

  /// Shuts down (see shutdown()) if that has not happened yet.
  ~Pool();

  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  /// Borrows a connection, waiting up to config().acquire_timeout.
  /// Throws AcquireTimeout (with the wait and a statistics snapshot) or
  /// PoolClosed. `site` is recorded for leak reports; leave it defaulted.
  PooledConnection acquire(std::source_location site = std::source_location::current());

  /// As acquire(), waiting up to `timeout` instead of the configured one.
  PooledConnection acquire(std::chrono::milliseconds timeout,
                           std::source_location site = std::source_location::current());

  /// Waits until initialization has an outcome: true when min_size connections
  /// are open (and observers have been told about each), false when the init timeout passed first
  /// (the pool keeps reconnecting in the background) or the pool was shut down.
  bool wait_until_ready();

  /// A consistent snapshot. Never queries the database and never waits for a
  /// connect or a validation in progress.
  PoolStatistics get_statistics() const;

  /// The current lifecycle state (cheap: one atomic load).
  PoolState state() const noexcept;

  /// Graceful shutdown: refuses new acquisitions at once (PoolClosed), wakes
  /// waiters with PoolClosed, waits up to config().shutdown_timeout for active
  /// connections to come back, closes everything and reaches TERMINATED.
  /// Idempotent; safe to call from any thread except one holding a connection
  /// of this pool (that would wait for itself until the timeout).
  void shutdown();

  /// Installs an observer for timing events (histograms). May be called at
  /// any time; at most 8 observers are attached at once (std::length_error
  /// beyond). Thread-safe.
  void add_observer(std::shared_ptr<PoolObserver> observer);

  /// Detaches an observer added before: it hears of no event that starts
  /// after this returns, and its slot is free for another. The pool keeps the
  /// object alive until the pool is destroyed. Thread-safe.
  void remove_observer(const PoolObserver* observer);

  /// Changes the maximum number of connections at run time. Growing lets
  /// queued acquire() calls get new connections at once. Shrinking closes
  /// surplus idle connections now and never one in use: surplus connections
  /// are closed as they come back, so total_connections may exceed max_size
  /// until then. Throws ConfigError when `max_size` is 0, above 10000 or
  /// below the current min_size (lower min_size first), PoolClosed after
  /// shutdown(). Thread-safe.
  void set_max_size(std::size_t max_size);

  /// Changes the number of connections kept open even when idle. Growing
  /// opens the missing connections in the background; shrinking lets idle
  /// connections above it close after max_idle_time as usual. Throws
  /// ConfigError when `min_size` exceeds the current max_size (raise max_size
  /// first), PoolClosed after shutdown(). Thread-safe.
  void set_min_size(std::size_t min_size);

  /// What drain() did.
  struct DrainResult {
    std::size_t closed_idle = 0;     ///< idle connections closed at once
    std::size_t replaced_later = 0;  ///< lent out now, closed when they come back
  };

  /// Recycles every connection gracefully, e.g. after rotating the database
  /// password or a failover: idle connections are closed now and replaced
  /// (up to min_size) by fresh ones, connections in use are closed when they
  /// come back, and connections being opened while drain() runs are discarded
  /// and opened again. Never interrupts a caller. Throws PoolClosed after
  /// shutdown(). Thread-safe.
  DrainResult drain();

  /// The startup configuration this pool was validated with. min_size and
  /// max_size here do not follow set_min_size()/set_max_size(); the current
  /// values are in get_statistics().
  const PoolConfig& config() const noexcept;

  /// Health thresholds from the configuration.
  HealthThresholds health_thresholds() const noexcept;

 private:
  detail::PoolCore* core_;  // owned; see PoolCore::destroy()
};

}  // namespace poolscope
