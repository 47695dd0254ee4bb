// Run-time resize and drain under load against a real PostgreSQL: 100
// workers keep borrowing connections while max_size goes up and down 20 times
// and the pool is drained 5 times. No request may fail, nothing may leak, and
// the statistics (and the server's own view) must add up afterwards.

#include <gtest/gtest.h>

#include <iostream>
#include <numeric>
#include <string>
#include <thread>

#include "chaos_support.h"
#include "load_generator.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {
namespace {

constexpr std::size_t kWorkers = 100;
constexpr int kResizes = 20;
constexpr int kDrains = 5;
const std::string kApplication = "chaos_resize";

std::size_t backends(const std::string& url) {
  pqxx::connection connection(url);
  pqxx::nontransaction query(connection);
  return query
      .exec1("SELECT count(*) FROM pg_stat_activity WHERE application_name = " +
             query.quote(kApplication))[0]
      .as<std::size_t>();
}

TEST(ResizeDrainChaos, HundredWorkersSurviveResizesAndDrainsWithoutErrorsOrLeaks) {
  AnyCluster cluster;
  PoolConfig config;
  config.database_url = with_parameter(cluster.url(), "application_name=" + kApplication);
  config.name = kApplication;
  config.min_size = 2;
  config.max_size = 10;
  // Generous: at max_size 3 a hundred workers queue, and queueing is not an error.
  config.acquire_timeout = 60s;
  config.command_timeout = 10s;
  config.leak_detection_timeout = 20s;
  config.shutdown_timeout = 10s;
  Pool pool(config);
  ASSERT_TRUE(pool.wait_until_ready());

  LoadTotals totals;
  std::size_t final_max = 0;
  {
    LoadGenerator load(pool, kWorkers, "SELECT 1");
    ASSERT_TRUE(eventually([&] { return load.served() > 1000; }, 60s));
    for (int round = 0; round < kResizes; ++round) {
      // Down to 3..5, up to 12..16: shrinking below the number in use and
      // growing while a hundred requests wait.
      final_max = round % 2 == 0 ? 3 + static_cast<std::size_t>(round % 3)
                                 : 12 + static_cast<std::size_t>(round % 5);
      pool.set_max_size(final_max);
      if (round % 4 == 1) pool.drain();
      // Growing: the waiting workers get new connections up to the new
      // maximum. Shrinking: the surplus closes as it comes back.
      if (round % 2 == 1) {
        ASSERT_TRUE(
            eventually([&] { return pool.get_statistics().total_connections == final_max; }, 60s))
            << round;
      } else {
        ASSERT_TRUE(
            eventually([&] { return pool.get_statistics().total_connections <= final_max; }, 60s))
            << round;
      }
      // Every phase then sees real traffic before the next change.
      const std::uint64_t served = load.served();
      ASSERT_TRUE(eventually([&] { return load.served() > served + 500; }, 60s)) << round;
      const PoolStatistics s = pool.get_statistics();
      EXPECT_EQ(s.max_size, final_max);
      EXPECT_LE(s.total_connections, final_max);
      EXPECT_EQ(s.total_connections, s.idle_connections + s.active_connections);
    }
    ASSERT_TRUE(load.stop(120s));
    totals = load.totals();
  }

  EXPECT_GT(totals.ok, 5000u);
  EXPECT_EQ(totals.failed(), 0u) << "timeouts " << totals.acquire_timeouts << ", broken "
                                 << totals.broken_connection << ", sql " << totals.sql_error
                                 << ", unexpected " << totals.unexpected;
  EXPECT_EQ(totals.dead_connection_reused, 0u);

  const PoolStatistics s = pool.get_statistics();
  std::cout << "requests ok " << totals.ok << ", failed " << totals.failed()
            << ", connections created " << s.connections_created << ", closed by resize "
            << s.closed(CloseReason::kResize) << ", by drain " << s.closed(CloseReason::kDrain)
            << ", longest acquire " << totals.longest_acquire_seconds << " s\n";
  EXPECT_EQ(s.resizes, static_cast<std::uint64_t>(kResizes));
  EXPECT_EQ(s.drains, static_cast<std::uint64_t>(kDrains));
  EXPECT_EQ(s.max_size, final_max);
  EXPECT_EQ(s.active_connections, 0u);
  EXPECT_EQ(s.waiting_requests, 0u);
  EXPECT_EQ(s.leaked_connections, 0u);
  EXPECT_EQ(s.leaks_detected, 0u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
  EXPECT_EQ(s.total_acquisitions, s.total_releases);
  EXPECT_EQ(s.total_acquisitions, totals.ok);
  EXPECT_LE(s.total_connections, final_max);
  EXPECT_EQ(s.total_connections, s.idle_connections);
  const std::uint64_t closed =
      std::accumulate(s.connections_closed.begin(), s.connections_closed.end(), std::uint64_t{0});
  EXPECT_EQ(s.connections_created, s.total_connections + closed);
  EXPECT_GT(s.closed(CloseReason::kResize), 0u);
  EXPECT_GT(s.closed(CloseReason::kDrain), 0u);
  EXPECT_EQ(s.closed(CloseReason::kBroken), 0u);
  // The server agrees: no connection was lost track of.
  EXPECT_TRUE(eventually(
      [&] { return backends(cluster.url()) == pool.get_statistics().total_connections; }, 20s))
      << backends(cluster.url()) << " backends, " << pool.get_statistics().total_connections
      << " in the pool";
}

}  // namespace
}  // namespace poolscope::chaos
