#pragma once

#include <chrono>
#include <memory>
#include <optional>
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

/// A configuration value is invalid. The message names the value as the user
/// gave it (the environment variable, the exporter flag, or for a PoolConfig
/// built in code the field), the rejected value and what is accepted.
class ConfigError : public Error {
 public:
  /// `field`: the PoolConfig field the value was for, "" when it was not one.
  ConfigError(std::string variable, std::string value, std::string accepted,
              std::string field = {});

  /// The name the rejected value was given under: "POOL_MAX_SIZE",
  /// "--pool.max-size", or "max_size" for a config built in code.
  const std::string& variable() const noexcept { return variable_; }
  /// The rejected value as given (never a password: DATABASE_URL errors do not
  /// show the value).
  const std::string& value() const noexcept { return value_; }
  /// What is accepted instead, e.g. "expected a whole number".
  const std::string& accepted() const noexcept { return accepted_; }
  /// The PoolConfig field, e.g. "max_size"; "" when the value was not a pool setting.
  const std::string& field() const noexcept { return field_; }

 private:
  std::string variable_;
  std::string value_;
  std::string accepted_;
  std::string field_;
};

/// acquire() waited its whole timeout without getting a connection.
class AcquireTimeout : public Error {
 public:
  /// `database_error`: the connection error that kept the pool from opening
  /// connections, when that is why no connection became free.
  AcquireTimeout(std::chrono::nanoseconds waited, std::shared_ptr<const PoolStatistics> snapshot,
                 std::optional<std::string> database_error = std::nullopt);

  /// How long the caller waited before giving up.
  std::chrono::nanoseconds waited() const noexcept { return waited_; }
  /// The pool's statistics at the moment of the timeout (never null).
  const PoolStatistics& statistics() const noexcept { return *snapshot_; }
  /// The database's error when the database, not the pool's size, is the
  /// cause (the last attempt to open a connection failed); else nullopt.
  const std::optional<std::string>& database_error() const noexcept { return database_error_; }

 private:
  std::chrono::nanoseconds waited_;
  std::shared_ptr<const PoolStatistics> snapshot_;
  std::optional<std::string> database_error_;
};

/// The pool is shutting down or terminated; no connection will be handed out.
class PoolClosed : public Error {
 public:
  PoolClosed();
};

}  // namespace poolscope
