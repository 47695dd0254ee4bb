#include "rate_limiter.h"

#include <algorithm>

namespace poolscope::exporter {

RateLimiter::RateLimiter(std::chrono::nanoseconds interval, long long burst)
    : interval_(interval), burst_(static_cast<double>(std::max(burst, 0LL))), tokens_(burst_) {}

bool RateLimiter::allow(Clock::time_point now) {
  if (!enabled()) return true;
  std::lock_guard lock(mutex_);
  if (!started_) {
    started_ = true;
    last_ = now;
  } else if (now > last_) {
    const double earned = std::chrono::duration<double>(now - last_).count() /
                          std::chrono::duration<double>(interval_).count();
    tokens_ = std::min(burst_, tokens_ + earned);
    last_ = now;
  }
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

}  // namespace poolscope::exporter
