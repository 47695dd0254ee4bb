#include "latency_histogram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

namespace poolscope::detail {
namespace {

using std::chrono::nanoseconds;

TEST(LatencyHistogram, CountsAValueInTheFirstBucketWhoseBoundHoldsIt) {
  LatencyHistogram histogram({0.001, 0.01});
  histogram.observe(nanoseconds(1'000'000));   // on the bound: le="0.001"
  histogram.observe(nanoseconds(1'000'001));   // just above: le="0.01"
  histogram.observe(nanoseconds(20'000'000));  // above every bound: +Inf
  histogram.observe(nanoseconds(-5));          // a clock step back counts as 0
  const auto snapshot = histogram.snapshot();
  ASSERT_EQ(snapshot.bucket.size(), 3u);
  EXPECT_EQ(snapshot.bucket[0].upper_bound, 0.001);
  EXPECT_EQ(snapshot.bucket[0].cumulative_count, 2u);
  EXPECT_EQ(snapshot.bucket[1].cumulative_count, 3u);
  EXPECT_TRUE(std::isinf(snapshot.bucket[2].upper_bound));
  EXPECT_EQ(snapshot.bucket[2].cumulative_count, 4u);
  EXPECT_EQ(snapshot.sample_count, 4u);
  EXPECT_DOUBLE_EQ(snapshot.sample_sum, 0.022000001);
}

TEST(LatencyHistogram, RejectsBoundsThatAreNotStrictlyAscending) {
  EXPECT_THROW(LatencyHistogram({0.01, 0.001}), std::invalid_argument);
  EXPECT_THROW(LatencyHistogram({0.001, 0.001}), std::invalid_argument);
  EXPECT_NO_THROW(LatencyHistogram({}));
}

}  // namespace
}  // namespace poolscope::detail
