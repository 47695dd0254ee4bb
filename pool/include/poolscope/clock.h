#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace poolscope {

/// Where the pool gets time from, and how it waits for it.
///
/// Injected so that time-dependent behaviour (timeouts, lifetimes, backoff,
/// health windows) can be tested with a fake clock instead of sleeping.
/// Implementations must be thread-safe: every method is called concurrently.
class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;

  virtual ~Clock() = default;

  /// Monotonic time, for every interval the pool measures.
  virtual time_point now() const noexcept = 0;

  /// Wall-clock time, only for timestamps shown to people (statistics, logs).
  virtual std::chrono::system_clock::time_point wall_now() const noexcept = 0;

  /// Blocks on `cv` (with `lock` held on entry and exit) until notified or until
  /// now() reaches `deadline`. May return early (spuriously): callers re-check
  /// their condition and the deadline in a loop. Returns cv_status::timeout
  /// once now() >= deadline.
  virtual std::cv_status wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                                    time_point deadline) = 0;

  /// The real clock: std::chrono::steady_clock's time and system_clock.
  /// On x86-64, when the kernel keeps time with the CPU's time-stamp counter,
  /// now() computes steady_clock time from that counter (about a third of
  /// the cost of clock_gettime on a virtual machine), steered towards
  /// steady_clock every 100 ms; it falls back to steady_clock for good if the
  /// two ever disagree by more than 1 ms or the counter goes back.
  static std::shared_ptr<Clock> system();
};

}  // namespace poolscope
