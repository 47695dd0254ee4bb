#include "poolscope/pool_statistics.h"

namespace poolscope {

std::string_view to_string(HealthStatus status) noexcept {
  switch (status) {
    case HealthStatus::kHealthy:
      return "healthy";
    case HealthStatus::kDegraded:
      return "degraded";
    case HealthStatus::kUnhealthy:
      return "unhealthy";
  }
  return "unhealthy";
}

std::string_view to_string(PoolState state) noexcept {
  switch (state) {
    case PoolState::kInitializing:
      return "initializing";
    case PoolState::kHealthy:
      return "healthy";
    case PoolState::kDegraded:
      return "degraded";
    case PoolState::kUnhealthy:
      return "unhealthy";
    case PoolState::kRecovering:
      return "recovering";
    case PoolState::kShuttingDown:
      return "shutting_down";
    case PoolState::kTerminated:
      return "terminated";
  }
  return "unhealthy";
}

std::string_view to_string(CloseReason reason) noexcept {
  switch (reason) {
    case CloseReason::kLifetime:
      return "lifetime";
    case CloseReason::kIdle:
      return "idle";
    case CloseReason::kBroken:
      return "broken";
    case CloseReason::kValidation:
      return "validation";
    case CloseReason::kShutdown:
      return "shutdown";
    case CloseReason::kResize:
      return "resize";
    case CloseReason::kDrain:
      return "drain";
  }
  return "broken";
}

std::string_view to_string(ErrorType type) noexcept {
  switch (type) {
    case ErrorType::kConnectionFailed:
      return "connection_failed";
    case ErrorType::kValidationFailed:
      return "validation_failed";
    case ErrorType::kConnectionBroken:
      return "connection_broken";
    case ErrorType::kTransactionLeftOpen:
      return "transaction_left_open";
    case ErrorType::kAcquireTimeout:
      return "acquire_timeout";
  }
  return "connection_failed";
}

}  // namespace poolscope
