#include "poolscope/error.h"

#include <fmt/format.h>

#include "poolscope/pool_statistics.h"

namespace poolscope {

ConfigError::ConfigError(std::string variable, std::string value, std::string accepted,
                         std::string field)
    : Error(fmt::format("invalid {}='{}': {}", variable, value, accepted)),
      variable_(std::move(variable)),
      value_(std::move(value)),
      accepted_(std::move(accepted)),
      field_(std::move(field)) {}

namespace {
std::string timeout_message(std::chrono::nanoseconds waited, const PoolStatistics& stats,
                            const std::optional<std::string>& database_error) {
  const double seconds = std::chrono::duration<double>(waited).count();
  if (database_error) {
    return fmt::format(
        "Connection acquisition timeout: waited {:.3f} s for a connection from pool '{}' "
        "({} connections open, state {}) while the database was unreachable: {}; the pool "
        "keeps reconnecting, check that the database named in DATABASE_URL is up and reachable",
        seconds, stats.pool_name, stats.total_connections, to_string(stats.state), *database_error);
  }
  return fmt::format(
      "Connection acquisition timeout: waited {:.3f} s for a connection from pool '{}' "
      "({}/{} connections active, {} waiting, state {}); raise POOL_MAX_SIZE or "
      "POOL_ACQUIRE_TIMEOUT, or look for slow queries and leaked connections",
      seconds, stats.pool_name, stats.active_connections, stats.max_size, stats.waiting_requests,
      to_string(stats.state));
}
}  // namespace

AcquireTimeout::AcquireTimeout(std::chrono::nanoseconds waited,
                               std::shared_ptr<const PoolStatistics> snapshot,
                               std::optional<std::string> database_error)
    : Error(timeout_message(waited, *snapshot, database_error)),
      waited_(waited),
      snapshot_(std::move(snapshot)),
      database_error_(std::move(database_error)) {}

PoolClosed::PoolClosed()
    : Error("the connection pool is shut down: no connection is handed out any more") {}

}  // namespace poolscope
