#include "stats_window.h"

#include <gtest/gtest.h>

namespace poolscope::detail {
namespace {

using namespace std::chrono_literals;

Clock::time_point at(std::chrono::milliseconds t) { return Clock::time_point(1h + t); }

TEST(StatsWindow, KeepsPeaksAndErrorsInsideTheWindow) {
  StatsWindow window(60s);
  window.record_acquisition(at(0s), 250.0, 7);
  window.record_error(at(1s));
  auto summary = window.summarize(at(30s));
  EXPECT_EQ(summary.peak_wait_ms, 250.0);
  EXPECT_EQ(summary.peak_active, 7u);
  EXPECT_EQ(summary.errors, 1u);
}

TEST(StatsWindow, ForgetsWhatIsOlderThanTheWindow) {
  StatsWindow window(60s);
  window.record_acquisition(at(0s), 250.0, 1);
  window.record_error(at(0s));
  window.record_acquisition(at(30s), 20.0, 1);
  auto summary = window.summarize(at(61s));
  EXPECT_EQ(summary.peak_wait_ms, 20.0);
  EXPECT_EQ(summary.errors, 0u);
  EXPECT_EQ(window.summarize(at(200s)).peak_wait_ms, 0.0);
}

TEST(StatsWindow, ReusedBucketStartsEmpty) {
  StatsWindow window(60s);
  window.record_error(at(5s));
  window.record_error(at(65s));  // same ring slot, a minute later
  EXPECT_EQ(window.summarize(at(65s)).errors, 1u);
}

TEST(StatsWindow, WaitsThatDoNotCountStillCountActive) {
  StatsWindow window(60s);
  window.record_acquisition(at(0s), std::nullopt, 3);
  auto summary = window.summarize(at(0s));
  EXPECT_EQ(summary.peak_wait_ms, 0.0);
  EXPECT_EQ(summary.peak_active, 3u);
}

TEST(StatsWindow, SecondThatComesRoundAgainIsNotTheCachedOne) {
  StatsWindow window(60s);
  window.record_acquisition(at(5s), 300.0, 9);
  window.record_acquisition(at(65s), 10.0, 2);  // same ring slot, a minute later
  auto summary = window.summarize(at(65s));
  EXPECT_EQ(summary.peak_wait_ms, 10.0);
  EXPECT_EQ(summary.peak_active, 2u);
  window.record_acquisition(at(66s), 20.0, 1);
  window.record_acquisition(at(66500ms), 30.0, 1);
  EXPECT_EQ(window.summarize(at(66s)).peak_wait_ms, 30.0);
}

TEST(StatsWindow, ForgetOutageDropsErrorsAndWaitsButKeepsActivePeaks) {
  StatsWindow window(60s);
  window.record_error(at(1s));
  window.record_acquisition(at(1s), 120.0, 4);
  window.forget_outage();
  auto summary = window.summarize(at(2s));
  EXPECT_EQ(summary.errors, 0u);
  EXPECT_EQ(summary.peak_wait_ms, 0.0);
  EXPECT_EQ(summary.peak_active, 4u);
}

}  // namespace
}  // namespace poolscope::detail
