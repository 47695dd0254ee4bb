#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace poolscope::exporter {

/// One token bucket per client address, for requests that arrive without
/// credentials the exporter has already verified: a client that keeps
/// sending wrong passwords (or none) empties its own bucket only, never the
/// budget of clients that authenticated. Same bucket rules as RateLimiter:
/// one token every `interval`, at most `burst` saved up; an interval of zero
/// disables limiting.
///
/// At most `max_clients` buckets are kept. When a new client finds the table
/// full, buckets that have refilled completely (their clients went quiet) are
/// dropped; if none has, the table is cleared, which only ever gives
/// clients tokens back, never takes them.
///
/// Thread-safe: allow() may be called from any number of threads.
class ClientRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  ClientRateLimiter(std::chrono::nanoseconds interval, long long burst,
                    std::size_t max_clients = 4096);

  /// True when limiting is on (interval > 0).
  bool enabled() const noexcept { return interval_.count() > 0; }

  /// Takes a token from `client`'s bucket at time `now` if one is available.
  bool allow(std::string_view client, Clock::time_point now = Clock::now());

  /// Number of buckets kept (for tests).
  std::size_t clients() const;

 private:
  struct Bucket {
    double tokens;
    Clock::time_point last;
  };

  double refilled(const Bucket& bucket, Clock::time_point now) const;
  void make_room(Clock::time_point now);  // needs mutex_

  const std::chrono::nanoseconds interval_;
  const double burst_;
  const std::size_t max_clients_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;  // guarded by mutex_
};

}  // namespace poolscope::exporter
