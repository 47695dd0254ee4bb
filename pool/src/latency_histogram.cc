#include "latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace poolscope::detail {

LatencyHistogram::LatencyHistogram(const std::vector<double>& bounds)
    : bounds_(bounds), counts_(bounds.size() + 1) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
    throw std::invalid_argument("LatencyHistogram: bucket bounds must be strictly ascending");
  }
  bounds_ns_.reserve(bounds_.size());
  for (const double bound : bounds_) bounds_ns_.push_back(std::llround(bound * 1e9));
}

void LatencyHistogram::observe(std::chrono::nanoseconds value) noexcept {
  const std::int64_t ns = std::max<std::int64_t>(value.count(), 0);
  const auto bucket =
      std::lower_bound(bounds_ns_.begin(), bounds_ns_.end(), ns) - bounds_ns_.begin();
  counts_[static_cast<std::size_t>(bucket)].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
}

prometheus::ClientMetric::Histogram LatencyHistogram::snapshot() const {
  prometheus::ClientMetric::Histogram histogram;
  histogram.bucket.reserve(bounds_.size() + 1);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < bounds_.size() ? bounds_[i] : std::numeric_limits<double>::infinity();
    histogram.bucket.push_back(bucket);
  }
  histogram.sample_count = cumulative;
  histogram.sample_sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return histogram;
}

}  // namespace poolscope::detail
