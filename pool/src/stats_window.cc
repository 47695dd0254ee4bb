#include "stats_window.h"

#include <algorithm>

namespace poolscope::detail {

StatsWindow::StatsWindow(std::chrono::seconds window)
    : size_(static_cast<std::size_t>(
          std::clamp<std::int64_t>(window.count(), 1, static_cast<std::int64_t>(kMaxSeconds)))) {}

std::int64_t StatsWindow::second_of(Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
}

StatsWindow::Bucket& StatsWindow::bucket_for(Clock::time_point now) {
  const std::int64_t second = second_of(now);
  if (current_ != nullptr && current_->second == second) return *current_;
  Bucket& bucket = buckets_[static_cast<std::size_t>(second % static_cast<std::int64_t>(size_))];
  if (bucket.second != second) bucket = Bucket{second, 0.0, 0, 0};
  current_ = &bucket;
  return bucket;
}

void StatsWindow::record_acquisition(Clock::time_point now, std::optional<double> wait_ms,
                                     std::size_t active) {
  Bucket& bucket = bucket_for(now);
  if (wait_ms) bucket.peak_wait_ms = std::max(bucket.peak_wait_ms, *wait_ms);
  bucket.peak_active = std::max(bucket.peak_active, active);
}

void StatsWindow::record_error(Clock::time_point now) { ++bucket_for(now).errors; }

void StatsWindow::forget_outage() {
  for (auto& bucket : buckets_) {
    bucket.errors = 0;
    bucket.peak_wait_ms = 0.0;
  }
}

StatsWindow::Summary StatsWindow::summarize(Clock::time_point now) const {
  const std::int64_t newest = second_of(now);
  const std::int64_t oldest = newest - static_cast<std::int64_t>(size_) + 1;
  Summary summary;
  for (std::size_t i = 0; i < size_; ++i) {
    const Bucket& bucket = buckets_[i];
    if (bucket.second < oldest || bucket.second > newest) continue;
    summary.peak_wait_ms = std::max(summary.peak_wait_ms, bucket.peak_wait_ms);
    summary.peak_active = std::max(summary.peak_active, bucket.peak_active);
    summary.errors += bucket.errors;
  }
  return summary;
}

}  // namespace poolscope::detail
