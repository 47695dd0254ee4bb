#include "client_rate_limiter.h"

#include <algorithm>

namespace poolscope::exporter {

ClientRateLimiter::ClientRateLimiter(std::chrono::nanoseconds interval, long long burst,
                                     std::size_t max_clients)
    : interval_(interval),
      burst_(static_cast<double>(std::max(burst, 0LL))),
      max_clients_(std::max<std::size_t>(max_clients, 1)) {}

double ClientRateLimiter::refilled(const Bucket& bucket, Clock::time_point now) const {
  if (now <= bucket.last) return bucket.tokens;
  const double earned = std::chrono::duration<double>(now - bucket.last).count() /
                        std::chrono::duration<double>(interval_).count();
  return std::min(burst_, bucket.tokens + earned);
}

void ClientRateLimiter::make_room(Clock::time_point now) {
  std::erase_if(buckets_, [&](const auto& entry) { return refilled(entry.second, now) >= burst_; });
  if (buckets_.size() >= max_clients_) buckets_.clear();
}

bool ClientRateLimiter::allow(std::string_view client, Clock::time_point now) {
  if (!enabled()) return true;
  std::lock_guard lock(mutex_);
  auto found = buckets_.find(std::string(client));
  if (found == buckets_.end()) {
    if (buckets_.size() >= max_clients_) make_room(now);
    found = buckets_.emplace(std::string(client), Bucket{burst_, now}).first;
  }
  Bucket& bucket = found->second;
  bucket.tokens = refilled(bucket, now);
  bucket.last = std::max(bucket.last, now);
  if (bucket.tokens < 1.0) return false;
  bucket.tokens -= 1.0;
  return true;
}

std::size_t ClientRateLimiter::clients() const {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

}  // namespace poolscope::exporter
