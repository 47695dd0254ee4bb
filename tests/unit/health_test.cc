#include <gtest/gtest.h>

#include "poolscope/pool_statistics.h"

namespace poolscope {
namespace {

PoolStatistics running(std::size_t total, std::size_t active, std::size_t max_size) {
  PoolStatistics s;
  s.state = PoolState::kHealthy;
  s.total_connections = total;
  s.active_connections = active;
  s.idle_connections = total - active;
  s.max_size = max_size;
  return s;
}

const HealthThresholds kGuide{};

TEST(Health, SmallPoolWithOneQueryIsHealthyBecauseItCanStillGrow) {
  // idle/total would say 50 % and "degraded"; headroom against max says 90 %.
  EXPECT_EQ(evaluate_health(running(2, 1, 10), kGuide), HealthStatus::kHealthy);
}

TEST(Health, HalfGrownBusyPoolIsNotUnhealthy) {
  EXPECT_EQ(evaluate_health(running(5, 5, 10), kGuide), HealthStatus::kDegraded);
}

TEST(Health, FullyGrownPoolMatchesTheGuide) {
  EXPECT_EQ(evaluate_health(running(10, 2, 10), kGuide), HealthStatus::kHealthy);
  EXPECT_EQ(evaluate_health(running(10, 3, 10), kGuide), HealthStatus::kDegraded);
  EXPECT_EQ(evaluate_health(running(10, 5, 10), kGuide), HealthStatus::kDegraded);
  EXPECT_EQ(evaluate_health(running(10, 6, 10), kGuide), HealthStatus::kUnhealthy);
}

TEST(Health, NoConnectionsIsUnhealthy) {
  EXPECT_EQ(evaluate_health(running(0, 0, 10), kGuide), HealthStatus::kUnhealthy);
  EXPECT_FALSE(can_serve(running(0, 0, 10)));
}

TEST(Health, RecentErrorsAndLongWaitsDegrade) {
  auto s = running(2, 0, 10);
  s.recent_errors = 1;
  EXPECT_EQ(evaluate_health(s, kGuide), HealthStatus::kDegraded);
  s.recent_errors = 0;
  s.recent_peak_wait_time_ms = 150;
  EXPECT_EQ(evaluate_health(s, kGuide), HealthStatus::kDegraded);
  s.recent_peak_wait_time_ms = 50;
  s.peak_wait_time_ms = 5000;  // lifetime peak: history, not health
  EXPECT_EQ(evaluate_health(s, kGuide), HealthStatus::kHealthy);
}

TEST(Health, LifecycleStatesThatCannotServe) {
  for (auto state : {PoolState::kInitializing, PoolState::kRecovering, PoolState::kShuttingDown,
                     PoolState::kTerminated}) {
    auto s = running(2, 0, 10);
    s.state = state;
    EXPECT_EQ(evaluate_health(s, kGuide), HealthStatus::kUnhealthy) << to_string(state);
    EXPECT_FALSE(can_serve(s)) << to_string(state);
  }
  auto busy = running(10, 10, 10);
  busy.state = PoolState::kUnhealthy;
  EXPECT_TRUE(can_serve(busy));  // load alone must not take an instance out
}

TEST(Health, ThresholdsAreConfigurable) {
  const HealthThresholds strict{0.95, 0.9, 100};
  EXPECT_EQ(evaluate_health(running(10, 1, 10), strict), HealthStatus::kDegraded);
  EXPECT_EQ(evaluate_health(running(10, 2, 10), strict), HealthStatus::kUnhealthy);
}

TEST(Health, NamesAreStable) {
  EXPECT_EQ(to_string(PoolState::kShuttingDown), "shutting_down");
  EXPECT_EQ(to_string(HealthStatus::kDegraded), "degraded");
  EXPECT_EQ(to_string(CloseReason::kValidation), "validation");
  EXPECT_EQ(to_string(ErrorType::kTransactionLeftOpen), "transaction_left_open");
}

}  // namespace
}  // namespace poolscope
