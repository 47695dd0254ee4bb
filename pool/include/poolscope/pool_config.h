#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "poolscope/database_url.h"

namespace poolscope {

/// The largest max_size accepted (configuration and Pool::set_max_size()).
inline constexpr std::size_t kMaxPoolSize = 10000;

/// Severity threshold for the pool's log lines.
enum class LogLevel { kDebug, kInfo, kWarning, kError, kCritical };

/// Who gets a connection when several callers want one.
enum class QueuePolicy {
  /// A caller that finds a connection idle takes it even when others wait,
  /// as long as the longest waiter has waited less than barging_wait_bound;
  /// after that, every returned connection goes straight to the longest
  /// waiter until the queue has caught up. Waiters among themselves are
  /// served in arrival order.
  kBarging,
  /// Strictly first come, first served: a returned connection always goes
  /// to the longest waiter, which costs one thread wake-up per hand-over.
  kFifo,
};

/// Everything a pool needs to know, with its defaults.
///
/// A plain value: copy it, change fields, then hand it to Pool, which calls
/// validate(). from_env() reads the variables that pool_settings()
/// (poolscope/pool_setting.h) lists and validates the result; that table is
/// the one place that names each field's variable, flag and default text.
struct PoolConfig {
  static constexpr std::size_t kDefaultMinSize = 2;
  static constexpr std::size_t kDefaultMaxSize = 10;
  static constexpr const char* kDefaultApplicationName = "poolscope";

  /// libpq URI or key=value string, parsed when assigned (a string assigns
  /// and parses). Its password never appears in logs, metrics, /health or
  /// error messages.
  DatabaseUrl database_url;
  /// Value of the `pool` label and of "pool" in log context; several pools in
  /// one process need distinct names.
  std::string name = "default";
  /// application_name of every connection, which is how the server
  /// (pg_stat_activity) and the exporter's server view tell this pool's
  /// sessions apart. Empty: the application_name of database_url, or
  /// kDefaultApplicationName when the URL sets none. Non-empty wins over the
  /// URL. Printable ASCII, at most 63 bytes (PostgreSQL truncates longer
  /// names).
  std::string application_name;
  /// Connections kept open even when idle.
  std::size_t min_size = kDefaultMinSize;
  /// Upper bound on open connections; at least 1 and at least min_size.
  std::size_t max_size = kDefaultMaxSize;
  /// How long acquire() waits for a connection before AcquireTimeout.
  std::chrono::milliseconds acquire_timeout = std::chrono::seconds{30};
  /// Time allowed to open min_size connections at start; also libpq's connect
  /// timeout (rounded up to whole seconds, at least 2).
  std::chrono::milliseconds init_timeout = std::chrono::seconds{2};
  /// Connections older than this (minus up to 10 % jitter) are recycled.
  std::chrono::milliseconds max_connection_lifetime = std::chrono::seconds{3600};
  /// Idle connections above min_size are closed after this.
  std::chrono::milliseconds max_idle_time = std::chrono::seconds{300};
  /// statement_timeout set on every connection; 0 disables it.
  std::chrono::milliseconds command_timeout = std::chrono::seconds{60};
  /// Warn about connections held longer than leak_detection_timeout.
  bool enable_leak_detection = true;
  std::chrono::milliseconds leak_detection_timeout = std::chrono::seconds{30};
  /// How long shutdown() waits for active connections.
  std::chrono::milliseconds shutdown_timeout = std::chrono::seconds{30};
  /// An idle connection unused for longer than this is checked with SELECT 1
  /// before it is handed out.
  std::chrono::milliseconds validation_idle_threshold = std::chrono::seconds{1};
  /// An idle connection whose last use ended longer ago than this is probed
  /// before hand-out: one non-blocking poll(2) of its socket, which catches a
  /// backend killed while the connection sat idle (pg_terminate_backend, a
  /// server restart). A connection used more recently is handed out without
  /// it; 0 probes every hand-out.
  std::chrono::milliseconds probe_idle_threshold = std::chrono::milliseconds{1};
  /// Who gets a connection under contention (barging or fifo).
  QueuePolicy queue_policy = QueuePolicy::kBarging;
  /// Under the barging policy, how long the longest waiter may wait before
  /// returned connections are handed to waiters in arrival order again.
  /// Ignored by fifo.
  std::chrono::milliseconds barging_wait_bound = std::chrono::milliseconds{1};
  /// How often the background task validates one idle connection (and so
  /// notices an outage without traffic).
  std::chrono::milliseconds health_check_interval = std::chrono::seconds{5};
  /// Headroom ((max_size - active) / max_size) at or above which the pool is
  /// healthy.
  double healthy_headroom = 0.8;
  /// Headroom below which the pool is unhealthy; between the two it is
  /// degraded.
  double degraded_headroom = 0.5;
  /// A wait longer than this within the health window makes the pool degraded.
  std::chrono::milliseconds degraded_wait_threshold = std::chrono::milliseconds{100};
  /// Window for "recent errors" and recent peaks (health, peak gauges); whole
  /// seconds from 1 s to 600 s.
  std::chrono::seconds health_window = std::chrono::seconds{60};
  /// Delays between reconnection attempts; the last one repeats.
  std::vector<std::chrono::milliseconds> reconnect_backoff = {
      std::chrono::seconds{1}, std::chrono::seconds{2}, std::chrono::seconds{4},
      std::chrono::seconds{8}, std::chrono::seconds{16}};
  /// Threshold for log lines.
  LogLevel log_level = LogLevel::kInfo;

  /// How a field is called in error messages: given a field name such as
  /// "max_size", the name the user set it under ("POOL_MAX_SIZE",
  /// "--pool.max-size").
  using FieldNamer = std::function<std::string(std::string_view field)>;

  /// Throws ConfigError naming the first invalid field by its name in code
  /// ("max_size"); ConfigError::field() is that name too.
  void validate() const;
  /// The same, naming fields (also other fields a limit refers to) as
  /// `name_of` says; ConfigError::field() is still the field's name in code.
  void validate(const FieldNamer& name_of) const;

  /// Reads the environment through `getenv` (unset variables keep their
  /// defaults) and validates. Throws ConfigError naming the variable, the
  /// value and what is accepted; an invalid default (min_size above a
  /// max_size from the environment) is named by its variable too.
  static PoolConfig from_env(
      const std::function<std::optional<std::string>(const std::string&)>& getenv);
  /// from_env() on the process environment.
  static PoolConfig from_env();
};

/// Parses "30", "30s", "500ms", "2m", "1h30m", "1.5s" (Go-style units: ns, us,
/// ms, s, m, h; a bare number means seconds). Negative values, overflow and
/// unknown units throw ConfigError naming `variable`.
std::chrono::milliseconds parse_duration(std::string_view text, const std::string& variable);

/// `duration` in the largest unit that shows it exactly: "1h", "5m", "30s",
/// "100ms" ("0s" for zero). parse_duration() reads it back.
std::string format_duration(std::chrono::milliseconds duration);

/// Parses comma-separated positive durations ("1s,2s,4s"); throws ConfigError
/// naming `variable` and the whole list.
std::vector<std::chrono::milliseconds> parse_duration_list(std::string_view text,
                                                           const std::string& variable);

/// Parses a duration of whole seconds from 1 s to 600 s ("60", "60s", "2m").
std::chrono::seconds parse_window(std::string_view text, const std::string& variable);

/// Parses a number from 0 to 1 ("0.8"); throws ConfigError naming `variable`.
double parse_fraction(std::string_view text, const std::string& variable);

/// Parses a non-negative integer; throws ConfigError naming `variable`.
std::size_t parse_size(std::string_view text, const std::string& variable);

/// Parses true/false/1/0/yes/no/on/off (case-insensitive); throws ConfigError.
bool parse_bool(std::string_view text, const std::string& variable);

/// Parses DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL (case-insensitive).
LogLevel parse_log_level(std::string_view text, const std::string& variable);

/// "DEBUG", "INFO", …
std::string_view to_string(LogLevel level) noexcept;

/// Parses "barging" or "fifo" (case-insensitive); throws ConfigError naming `variable`.
QueuePolicy parse_queue_policy(std::string_view text, const std::string& variable);

/// "barging" or "fifo".
std::string_view to_string(QueuePolicy policy) noexcept;

}  // namespace poolscope
