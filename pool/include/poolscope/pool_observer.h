#pragma once

#include <chrono>

namespace poolscope {

/// Receives the pool's timing events as they happen (for histograms).
///
/// Everything that can be counted is in PoolStatistics instead; this interface
/// only carries individual durations. Methods are called concurrently from any
/// thread that acquires or releases, without the pool lock held, so they must be
/// thread-safe, cheap and must not throw.
class PoolObserver {
 public:
  virtual ~PoolObserver() = default;

  /// A caller got a connection after waiting `waited` (including validation).
  virtual void on_acquired(std::chrono::nanoseconds waited) noexcept = 0;

  /// A caller gave back a connection it had held for `held`.
  virtual void on_released(std::chrono::nanoseconds held) noexcept = 0;

  /// A new connection was opened and validated in `took`.
  virtual void on_connection_created(std::chrono::nanoseconds took) noexcept = 0;
};

}  // namespace poolscope
