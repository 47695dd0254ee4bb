#pragma once

#include <prometheus/metric_family.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "poolscope/database_url.h"

namespace poolscope::exporter {

/// What PostgreSQL said about one pool's sessions at one moment.
struct ServerReading {
  /// "host:port/dbname" as the server view's own connection resolved it.
  std::string server;
  std::size_t active = 0;               ///< state 'active'
  std::size_t idle = 0;                 ///< state 'idle'
  std::size_t idle_in_transaction = 0;  ///< 'idle in transaction' and its '(aborted)' form
  std::size_t other = 0;                ///< any other state ('fastpath function call', NULL, …)
  /// Age of the oldest open transaction among the pool's sessions; 0 when none.
  double oldest_transaction_age_seconds = 0.0;
  std::size_t max_connections = 0;  ///< the server's max_connections
  /// superuser_reserved_connections plus reserved_connections (PostgreSQL 16+).
  std::size_t reserved_connections = 0;

  /// max_connections minus the reserved slots: what ordinary roles can open.
  std::size_t available_connections() const noexcept {
    return max_connections > reserved_connections ? max_connections - reserved_connections : 0;
  }
};

/// The exporter's server-side view of its pool: on a slow interval, one
/// query of pg_stat_activity (the pool's sessions by state, found by the
/// pool's application_name on the current database, and the oldest
/// transaction) and of the server's connection limits, over a single libpqxx
/// connection of its own, so it never takes a pool connection. The query
/// runs under a short statement_timeout and a client-side deadline; a failed
/// read is logged and counted, the connection reopened on the next round,
/// and the session gauges disappear until a read succeeds again. It never
/// blocks a scrape: collect() only copies the last reading.
///
/// The first successful read logs a warning when the pool's max_size alone
/// exceeds the server's available slots.
///
/// Thread-safe: collect(), last_reading() and error_count() may be called
/// from any thread while the background thread reads.
class ServerView {
 public:
  struct Options {
    /// The pool's DATABASE_URL.
    DatabaseUrl database_url;
    /// application_name of the pool's connections, the filter of the query.
    std::string application_name;
    /// Value of the `pool` label.
    std::string pool_name;
    /// The pool's configured max_size, exported beside the server's limits.
    std::size_t pool_max_size = 0;
    /// Pause between reads; the first read starts at once.
    std::chrono::milliseconds interval = std::chrono::seconds(30);
    /// statement_timeout of the view's connection; also bounds connecting
    /// (rounded up to whole seconds, at least 2, as libpq requires).
    std::chrono::milliseconds statement_timeout = std::chrono::seconds(2);
    /// Prepended to every metric name.
    std::string metrics_prefix = "codebase_mcp_pool_";
  };

  /// Starts the background thread when `start_thread` (tests call
  /// read_once() themselves with false). Never throws for database errors;
  /// throws std::invalid_argument when options.database_url is empty.
  explicit ServerView(Options options, bool start_thread = true);
  /// Stops the thread and closes the connection.
  ~ServerView();

  ServerView(const ServerView&) = delete;
  ServerView& operator=(const ServerView&) = delete;

  /// One read: connects when needed, queries, stores the result. Returns
  /// false (after logging and counting the error) when it failed. Call from
  /// one thread at a time.
  bool read_once();

  /// The last successful reading, or nullopt when the last read failed or
  /// none has finished yet.
  std::optional<ServerReading> last_reading() const;

  /// Failed reads since the start.
  std::uint64_t error_count() const noexcept { return errors_.load(); }

  /// The server view's families (see docs/metrics.md); consistent with one
  /// reading.
  std::vector<prometheus::MetricFamily> collect() const;

 private:
  struct Connection;

  void run();
  ServerReading query();

  const Options options_;
  const DatabaseUrl url_;                   // options_.database_url with the view's settings
  std::unique_ptr<Connection> connection_;  // used by read_once() only
  bool warned_overcommit_ = false;          // used by read_once() only
  std::atomic<std::uint64_t> errors_{0};
  mutable std::mutex mutex_;
  std::optional<ServerReading> reading_;  // guarded by mutex_
  std::string server_;                    // guarded by mutex_; "" until first connected
  bool stopping_ = false;                 // guarded by mutex_
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace poolscope::exporter
