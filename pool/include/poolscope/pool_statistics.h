#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace poolscope {

/// The three-tier health of a pool. Numeric values are what the
/// `health_status` metric reports.
enum class HealthStatus { kHealthy = 0, kDegraded = 1, kUnhealthy = 2 };

/// Lifecycle states: INITIALIZING -> HEALTHY <-> DEGRADED/UNHEALTHY ->
/// RECOVERING -> HEALTHY, and SHUTTING_DOWN -> TERMINATED at the end.
enum class PoolState {
  kInitializing,
  kHealthy,
  kDegraded,
  kUnhealthy,
  kRecovering,
  kShuttingDown,
  kTerminated,
};
inline constexpr std::size_t kPoolStateCount = 7;

/// Why the pool closed a connection (the `reason` label of connections_closed_total).
/// kResize: surplus after max_size was lowered; kDrain: recycled by drain().
enum class CloseReason { kLifetime, kIdle, kBroken, kValidation, kShutdown, kResize, kDrain };
inline constexpr std::size_t kCloseReasonCount = 7;

/// The fixed set of error types (the `error_type` label of errors_total).
enum class ErrorType {
  kConnectionFailed,     ///< opening a connection failed
  kValidationFailed,     ///< SELECT 1 on an idle connection failed
  kConnectionBroken,     ///< a caller returned a broken connection
  kTransactionLeftOpen,  ///< a caller returned a connection inside a transaction
  kAcquireTimeout,       ///< acquire() timed out
};
inline constexpr std::size_t kErrorTypeCount = 5;

std::string_view to_string(HealthStatus status) noexcept;  ///< "healthy", "degraded", "unhealthy"
std::string_view to_string(PoolState state) noexcept;      ///< "healthy", "shutting_down", …
std::string_view to_string(CloseReason reason) noexcept;   ///< "lifetime", "idle", …
std::string_view to_string(ErrorType type) noexcept;       ///< "connection_failed", …

/// A connection held longer than the leak detection timeout, and where it was
/// acquired (the caller of Pool::acquire()).
struct LeakedConnection {
  std::uint64_t connection_id = 0;  ///< "conn_<id>" in logs
  double held_seconds = 0.0;        ///< since acquire() handed it out
  std::string file;                 ///< source file of the acquire() call
  std::uint32_t line = 0;
  std::string function;  ///< enclosing function, as the compiler names it
};

/// The leaked connections acquired at one source location.
struct LeakSite {
  std::string file;
  std::uint32_t line = 0;
  std::string function;
  std::size_t connections = 0;  ///< leaked right now from this site
  double oldest_held_seconds = 0.0;
};

/// A consistent snapshot of a pool, taken under its lock in one step.
///
/// Field names are the health document's; `recent_*` fields cover the
/// health window (60 s by default), the others the pool's lifetime. Invariant:
/// total_connections == idle_connections + active_connections.
struct PoolStatistics {
  std::string pool_name;

  std::size_t total_connections = 0;    ///< open connections, idle + active
  std::size_t idle_connections = 0;     ///< open and not held by a caller
  std::size_t active_connections = 0;   ///< held by callers
  std::size_t waiting_requests = 0;     ///< acquire() calls queued for a connection
  std::size_t pending_connections = 0;  ///< connections being opened right now
  std::size_t leaked_connections = 0;   ///< held longer than the leak timeout right now
  std::size_t min_size = 0;             ///< current value (set_min_size() changes it)
  std::size_t max_size = 0;             ///< current value (set_max_size() changes it)
  /// Age of the longest-held connection now lent out (leaked or not); 0 when
  /// none is lent out.
  double oldest_held_seconds = 0.0;
  /// The longest-held leaked connections, oldest first, at most
  /// kMaxLeakedConnectionsReported of the leaked_connections.
  std::vector<LeakedConnection> leaked;
  /// Leaked connections grouped by acquisition site, most connections first,
  /// at most kMaxLeakSitesReported sites; leaks from further sites are only
  /// in leaked_connections.
  std::vector<LeakSite> leak_sites;

  double avg_acquisition_time_ms = 0.0;            ///< mean over the lifetime
  std::size_t peak_active_connections = 0;         ///< lifetime maximum
  double peak_wait_time_ms = 0.0;                  ///< lifetime maximum
  std::size_t recent_peak_active_connections = 0;  ///< maximum within the health window
  double recent_peak_wait_time_ms = 0.0;           ///< maximum within the health window
  std::uint64_t recent_errors = 0;                 ///< errors within the health window

  std::uint64_t total_acquisitions = 0;
  std::uint64_t total_releases = 0;
  std::uint64_t acquire_timeouts = 0;
  std::uint64_t connections_created = 0;
  std::uint64_t connection_failures = 0;  ///< failed attempts to open a connection
  std::uint64_t reconnect_attempts = 0;
  std::uint64_t leaks_detected = 0;
  std::uint64_t leaks_returned = 0;  ///< leaked connections that came back later
  std::uint64_t resizes = 0;         ///< calls of set_max_size() and set_min_size() that succeeded
  std::uint64_t drains = 0;          ///< calls of drain()
  std::array<std::uint64_t, kCloseReasonCount> connections_closed{};  ///< by CloseReason
  std::array<std::uint64_t, kErrorTypeCount> errors{};                ///< by ErrorType

  std::chrono::system_clock::time_point pool_created_at{};
  /// Last successful validation (background or before hand-out).
  std::optional<std::chrono::system_clock::time_point> last_health_check;
  /// Round trip of that validation.
  std::optional<double> last_validation_latency_ms;
  std::optional<std::string> last_error;
  std::optional<std::chrono::system_clock::time_point> last_error_time;

  PoolState state = PoolState::kInitializing;
  HealthStatus health = HealthStatus::kUnhealthy;
  double uptime_seconds = 0.0;

  std::uint64_t closed(CloseReason reason) const noexcept {
    return connections_closed[static_cast<std::size_t>(reason)];
  }
  std::uint64_t error_count(ErrorType type) const noexcept {
    return errors[static_cast<std::size_t>(type)];
  }
};

/// Bounds of PoolStatistics::leaked and ::leak_sites, so that a pool leaking
/// thousands of connections still gives a small snapshot.
inline constexpr std::size_t kMaxLeakedConnectionsReported = 10;
inline constexpr std::size_t kMaxLeakSitesReported = 5;

/// Health thresholds: healthy at 80% headroom or more, degraded at 50%,
/// degraded when a wait in the window exceeded 100 ms.
struct HealthThresholds {
  double healthy_headroom = 0.8;
  double degraded_headroom = 0.5;
  double degraded_wait_ms = 100.0;
};

/// Three tiers: capacity is headroom against max_size (not against the
/// connections open now), and errors/waits count only within the health window.
/// Unhealthy when there is no connection, or the pool is initializing,
/// recovering, shutting down or terminated.
HealthStatus evaluate_health(const PoolStatistics& stats, const HealthThresholds& thresholds);

/// True when the pool can serve requests now (the /health 200 vs 503 rule):
/// it has connections and is neither initializing, recovering, shutting down
/// nor terminated. Load alone never makes a pool unable to serve.
bool can_serve(const PoolStatistics& stats) noexcept;

}  // namespace poolscope
