#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace poolscope {

using namespace std::chrono_literals;

/// The largest max_size accepted (configuration and Pool::set_max_size()).
inline constexpr std::size_t kMaxPoolSize = 10000;

/// Severity threshold for the pool's log lines.
enum class LogLevel { kDebug, kInfo, kWarning, kError, kCritical };

/// Everything a pool needs to know, with the defaults of the guide.
///
/// A plain value: copy it, change fields, then hand it to Pool, which calls
/// validate(). from_env() reads the variables of the README's configuration
/// table and validates the result.
struct PoolConfig {
  static constexpr std::size_t kDefaultMinSize = 2;
  static constexpr std::size_t kDefaultMaxSize = 10;

  /// libpq URI or key=value string. Its password never appears in logs,
  /// metrics, /health or error messages. Env: DATABASE_URL.
  std::string database_url;
  /// Value of the `pool` label and of "pool" in log context; several pools in
  /// one process need distinct names. Env: POOL_NAME.
  std::string name = "default";
  /// Connections kept open even when idle. Env: POOL_MIN_SIZE.
  std::size_t min_size = kDefaultMinSize;
  /// Upper bound on open connections; at least 1 and at least min_size. Env: POOL_MAX_SIZE.
  std::size_t max_size = kDefaultMaxSize;
  /// How long acquire() waits for a connection before AcquireTimeout. Env: POOL_ACQUIRE_TIMEOUT.
  std::chrono::milliseconds acquire_timeout = 30s;
  /// Time allowed to open min_size connections at start; also libpq's connect
  /// timeout (rounded up to whole seconds, at least 2). Env: POOL_INIT_TIMEOUT.
  std::chrono::milliseconds init_timeout = 2s;
  /// Connections older than this (minus up to 10 % jitter) are recycled. Env: POOL_MAX_CONNECTION_LIFETIME.
  std::chrono::milliseconds max_connection_lifetime = 3600s;
  /// Idle connections above min_size are closed after this. Env: POOL_MAX_IDLE_TIME.
  std::chrono::milliseconds max_idle_time = 300s;
  /// statement_timeout set on every connection; 0 disables it. Env: POOL_COMMAND_TIMEOUT.
  std::chrono::milliseconds command_timeout = 60s;
  /// Warn about connections held longer than leak_detection_timeout. Env: POOL_ENABLE_LEAK_DETECTION.
  bool enable_leak_detection = true;
  /// Env: POOL_LEAK_DETECTION_TIMEOUT.
  std::chrono::milliseconds leak_detection_timeout = 30s;
  /// How long shutdown() waits for active connections. Env: POOL_SHUTDOWN_TIMEOUT.
  std::chrono::milliseconds shutdown_timeout = 30s;
  /// An idle connection unused for longer than this is checked with SELECT 1
  /// before it is handed out. Env: POOL_VALIDATION_IDLE_THRESHOLD.
  std::chrono::milliseconds validation_idle_threshold = 1s;
  /// An idle connection whose last use ended longer ago than this is probed
  /// before hand-out: one non-blocking poll(2) of its socket, which catches a
  /// backend killed while the connection sat idle (pg_terminate_backend, a
  /// server restart). A connection used more recently is handed out without
  /// it; 0 probes every hand-out. Env: POOL_PROBE_IDLE_THRESHOLD.
  std::chrono::milliseconds probe_idle_threshold = 1ms;
  /// How often the background task validates one idle connection (and so
  /// notices an outage without traffic). Env: POOL_HEALTH_CHECK_INTERVAL.
  std::chrono::milliseconds health_check_interval = 5s;
  /// Headroom ((max_size - active) / max_size) at or above which the pool is
  /// healthy. Env: POOL_HEALTHY_HEADROOM.
  double healthy_headroom = 0.8;
  /// Headroom below which the pool is unhealthy; between the two it is
  /// degraded. Env: POOL_DEGRADED_HEADROOM.
  double degraded_headroom = 0.5;
  /// A wait longer than this within the health window makes the pool degraded.
  /// Env: POOL_DEGRADED_WAIT_THRESHOLD.
  std::chrono::milliseconds degraded_wait_threshold = 100ms;
  /// Window for "recent errors" and recent peaks (health, peak gauges); whole
  /// seconds from 1 s to 600 s. Env: POOL_HEALTH_WINDOW.
  std::chrono::seconds health_window = 60s;
  /// Delays between reconnection attempts; the last one repeats.
  /// Env: POOL_RECONNECT_BACKOFF (comma-separated, e.g. 1s,2s,4s,8s,16s).
  std::vector<std::chrono::milliseconds> reconnect_backoff = {1s, 2s, 4s, 8s, 16s};
  /// Threshold for log lines. Env: LOG_LEVEL (DEBUG, INFO, WARNING, ERROR, CRITICAL).
  LogLevel log_level = LogLevel::kInfo;

  /// Throws ConfigError naming the first invalid field.
  void validate() const;

  /// Reads the environment through `getenv` (unset variables keep their
  /// defaults) and validates. Throws ConfigError naming the variable, the
  /// value and what is accepted.
  static PoolConfig from_env(
      const std::function<std::optional<std::string>(const std::string&)>& getenv);
  /// from_env() on the process environment.
  static PoolConfig from_env();
};

/// Parses "30", "30s", "500ms", "2m", "1h30m", "1.5s" (Go-style units: ns, us,
/// ms, s, m, h; a bare number means seconds). Negative values, overflow and
/// unknown units throw ConfigError naming `variable`.
std::chrono::milliseconds parse_duration(std::string_view text, const std::string& variable);

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

}  // namespace poolscope
