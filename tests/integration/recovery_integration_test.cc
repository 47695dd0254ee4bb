// Database restarts against a cluster of the test's own.

#include <gtest/gtest.h>

#include <atomic>
#include <pqxx/pqxx>
#include <thread>
#include <vector>

#include "cluster.h"
#include "fakes.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::TempCluster;

TEST(RecoveryIntegration, PoolRecoversAfterTheDatabaseRestarts) {
  TempCluster cluster;
  PoolConfig c;
  c.database_url = cluster.url();
  c.health_check_interval = 200ms;
  c.reconnect_backoff = {100ms, 200ms, 400ms};
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }));

  cluster.stop_immediate();
  // Noticed without traffic: the background validation finds the dead connections.
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kRecovering; }));
  EXPECT_FALSE(can_serve(pool.get_statistics()));

  // A request made during the outage waits and is served once the database is back.
  std::atomic<bool> served{false};
  std::thread waiter([&] {
    auto connection = pool.acquire(20s);
    pqxx::nontransaction tx(*connection);
    served = tx.exec("SELECT 1")[0][0].as<int>() == 1;
  });
  ASSERT_TRUE(eventually([&] { return pool.get_statistics().waiting_requests == 1; }));
  cluster.start();
  waiter.join();
  EXPECT_TRUE(served.load());
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }));
  const auto s = pool.get_statistics();
  EXPECT_GE(s.reconnect_attempts, 1u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
  EXPECT_EQ(s.total_acquisitions, s.total_releases);
  EXPECT_TRUE(s.last_error.has_value());
  EXPECT_EQ(s.last_error->find(cluster.password()), std::string::npos);
}

TEST(RecoveryIntegration, StartsWhileTheDatabaseIsDownAndComesUpLater) {
  TempCluster cluster;
  cluster.stop_immediate();
  PoolConfig c;
  c.database_url = cluster.url();
  c.init_timeout = 300ms;
  c.reconnect_backoff = {100ms, 200ms};
  Pool pool(c);
  EXPECT_FALSE(pool.wait_until_ready());
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kRecovering; }));
  EXPECT_GE(pool.get_statistics().error_count(ErrorType::kConnectionFailed),
            2u);  // attempts + init timeout
  EXPECT_FALSE(can_serve(pool.get_statistics()));
  cluster.start();
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }));
  // Healthy (able to serve) from the first connection on; min_size follows.
  EXPECT_TRUE(eventually([&] { return pool.get_statistics().total_connections == 2; }));
}

}  // namespace
}  // namespace poolscope
