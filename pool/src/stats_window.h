#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>

#include "poolscope/clock.h"

namespace poolscope::detail {

/// Maxima and counts over a sliding window of whole seconds (the health window).
///
/// One bucket per second in a ring; a bucket is reset when its second comes
/// round again, so reading never needs to expire anything. Not thread-safe:
/// the pool calls it under its lock. Time comes from the caller, so tests
/// drive it with a fake clock.
class StatsWindow {
 public:
  static constexpr std::size_t kMaxSeconds = 600;

  explicit StatsWindow(std::chrono::seconds window);

  /// One acquisition: `active` connections lent out at `now`, after a wait of
  /// `wait_ms` (std::nullopt: the wait does not count, see PoolCore).
  void record_acquisition(Clock::time_point now, std::optional<double> wait_ms, std::size_t active);
  void record_error(Clock::time_point now);
  /// Drops the error counts and the wait maxima (active maxima stay): an
  /// outage that has ended is neither a "recent error" nor a "recent wait".
  void forget_outage();

  struct Summary {
    double peak_wait_ms = 0.0;
    std::size_t peak_active = 0;
    std::uint64_t errors = 0;
  };
  /// Aggregate of the buckets inside the window ending at `now`.
  Summary summarize(Clock::time_point now) const;

 private:
  struct Bucket {
    std::int64_t second = -1;
    double peak_wait_ms = 0.0;
    std::size_t peak_active = 0;
    std::uint64_t errors = 0;
  };
  Bucket& bucket_for(Clock::time_point now);
  static std::int64_t second_of(Clock::time_point now);

  std::size_t size_;
  std::array<Bucket, kMaxSeconds> buckets_{};
  // The bucket of the second most recently recorded: nearly every call lands
  // in it, which saves the modulo on the acquire path.
  Bucket* current_ = nullptr;
};

}  // namespace poolscope::detail
