#pragma once

#include <chrono>
#include <mutex>

namespace poolscope::exporter {

/// A token bucket (the web configuration's `rate_limit`): one token every
/// `interval`, at most `burst` saved up; each request takes one or is refused.
/// An interval of zero disables limiting. As in the exporter toolkit, a burst
/// of zero with a non-zero interval refuses every request.
///
/// Thread-safe: allow() may be called from any number of threads.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  RateLimiter(std::chrono::nanoseconds interval, long long burst);

  /// True when limiting is on (interval > 0).
  bool enabled() const noexcept { return interval_.count() > 0; }

  std::chrono::nanoseconds interval() const noexcept { return interval_; }
  long long burst() const noexcept { return static_cast<long long>(burst_); }

  /// Takes a token at time `now` if one is available.
  bool allow(Clock::time_point now = Clock::now());

 private:
  const std::chrono::nanoseconds interval_;
  const double burst_;
  std::mutex mutex_;
  double tokens_;             // guarded by mutex_
  Clock::time_point last_{};  // guarded by mutex_; epoch until the first call
  bool started_ = false;      // guarded by mutex_
};

}  // namespace poolscope::exporter
