// Leak sites and drain() with real PostgreSQL connections.

#include <gtest/gtest.h>

#include <pqxx/pqxx>
#include <set>
#include <string>
#include <vector>

#include "cluster.h"
#include "fakes.h"
#include "poolscope/pool.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::shared_database_url;

int backend_pid(PooledConnection& connection) {
  pqxx::nontransaction tx(*connection);
  return tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
}

TEST(RuntimeControlsIntegration, LeakedConnectionIsReportedWithItsAcquisitionSite) {
  PoolConfig c;
  c.database_url = shared_database_url();
  c.min_size = 1;
  c.max_size = 4;
  c.leak_detection_timeout = 300ms;
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  const std::uint32_t acquire_line = __LINE__ + 1;
  auto leaked = pool.acquire();
  EXPECT_GT(backend_pid(leaked), 0);
  ASSERT_TRUE(eventually([&] { return pool.get_statistics().leaked_connections == 1; }));
  const PoolStatistics s = pool.get_statistics();
  ASSERT_EQ(s.leaked.size(), 1u);
  EXPECT_EQ(s.leaked[0].connection_id, leaked.id());
  EXPECT_GE(s.leaked[0].held_seconds, 0.3);
  EXPECT_NE(s.leaked[0].file.find("runtime_controls_integration_test.cc"), std::string::npos);
  EXPECT_EQ(s.leaked[0].line, acquire_line);
  ASSERT_EQ(s.leak_sites.size(), 1u);
  EXPECT_EQ(s.leak_sites[0].connections, 1u);
  EXPECT_GE(s.oldest_held_seconds, s.leaked[0].held_seconds);
  leaked.release();
  EXPECT_TRUE(pool.get_statistics().leaked.empty());
}

TEST(RuntimeControlsIntegration, DrainReplacesEveryBackendWithoutInterruptingAHolder) {
  PoolConfig c;
  c.database_url = shared_database_url();
  c.min_size = 3;
  c.max_size = 3;
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  std::set<int> before;
  {
    std::vector<PooledConnection> all;
    for (int i = 0; i < 3; ++i) all.push_back(pool.acquire());
    for (auto& connection : all) before.insert(backend_pid(connection));
  }
  ASSERT_EQ(before.size(), 3u);

  auto held = pool.acquire();
  const int held_pid = backend_pid(held);
  const Pool::DrainResult result = pool.drain();
  EXPECT_EQ(result.closed_idle, 2u);
  EXPECT_EQ(result.replaced_later, 1u);
  EXPECT_EQ(backend_pid(held), held_pid);  // still the same, working session
  held.release();

  ASSERT_TRUE(eventually([&] { return pool.get_statistics().total_connections == 3; }));
  std::vector<PooledConnection> all;
  for (int i = 0; i < 3; ++i) all.push_back(pool.acquire());
  for (auto& connection : all) {
    EXPECT_EQ(before.count(backend_pid(connection)), 0u) << "a backend from before the drain";
  }
  const PoolStatistics s = pool.get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kDrain), 3u);
  EXPECT_EQ(s.drains, 1u);
}

}  // namespace
}  // namespace poolscope
