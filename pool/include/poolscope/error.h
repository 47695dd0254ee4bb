#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

namespace poolscope {

struct PoolStatistics;

/// Base of every error poolscope throws. Catch this to handle them all.
///
/// The children split along what the caller should do: ConfigError means "fix
/// your configuration"; AcquireTimeout and PoolClosed are runtime conditions a
/// service recovers from (retry later, fail the request, stop).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// A configuration value is invalid. The message names the variable (or flag),
/// the rejected value and what is accepted.
class ConfigError : public Error {
 public:
  ConfigError(std::string variable, std::string value, const std::string& accepted);

  /// The environment variable or field that was rejected, e.g. "POOL_MAX_SIZE".
  const std::string& variable() const noexcept { return variable_; }
  /// The rejected value as given (never a password: DATABASE_URL errors redact it).
  const std::string& value() const noexcept { return value_; }

 private:
  std::string variable_;
  std::string value_;
};

/// acquire() waited its whole timeout without getting a connection.
class AcquireTimeout : public Error {
 public:
  AcquireTimeout(std::chrono::nanoseconds waited, std::shared_ptr<const PoolStatistics> snapshot);

  /// How long the caller waited before giving up.
  std::chrono::nanoseconds waited() const noexcept { return waited_; }
  /// The pool's statistics at the moment of the timeout (never null).
  const PoolStatistics& statistics() const noexcept { return *snapshot_; }

 private:
  std::chrono::nanoseconds waited_;
  std::shared_ptr<const PoolStatistics> snapshot_;
};

/// The pool is shutting down or terminated; no connection will be handed out.
class PoolClosed : public Error {
 public:
  PoolClosed();
};

}  // namespace poolscope
