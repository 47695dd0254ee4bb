#pragma once

#include <prometheus/client_metric.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

namespace poolscope::detail {

/// A Prometheus histogram of durations that the pool's hot path feeds without
/// a lock: an observation is two relaxed atomic additions, one to its bucket
/// and one to the sum (kept in integer nanoseconds). prometheus::Histogram
/// takes a mutex and updates two doubles by compare-and-swap for each.
///
/// A snapshot taken while observations run may count an observation in its
/// bucket but not yet in the sum, or the other way round; the buckets and
/// the count always agree, because the count is their total.
class LatencyHistogram {
 public:
  /// `bounds`: the buckets' upper bounds in seconds, ascending; +Inf is added.
  explicit LatencyHistogram(const std::vector<double>& bounds);

  /// Counts `value` in the first bucket whose bound is >= it (Prometheus's
  /// `le`); a negative value counts as 0.
  void observe(std::chrono::nanoseconds value) noexcept;

  /// Cumulative buckets (the last one +Inf), count and sum in seconds.
  prometheus::ClientMetric::Histogram snapshot() const;

 private:
  std::vector<double> bounds_;
  std::vector<std::int64_t> bounds_ns_;
  std::vector<std::atomic<std::uint64_t>> counts_;  // per bound, then +Inf
  // Wraps after 584 years of summed durations (a counter reset to Prometheus).
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace poolscope::detail
