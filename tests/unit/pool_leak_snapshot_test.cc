// The leak snapshot in PoolStatistics: which connections leaked, where they
// were acquired, and the age of the oldest held connection.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "fakes.h"
#include "poolscope/pool.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::FakeClock;
using testing::FakeFactory;
using testing::FakeServer;

class PoolLeakSnapshotTest : public ::testing::Test {
 protected:
  std::unique_ptr<Pool> make_pool(std::size_t max_size) {
    PoolConfig c;
    c.min_size = 1;
    c.max_size = max_size;
    c.leak_detection_timeout = 30s;
    return std::make_unique<Pool>(c, std::make_shared<FakeFactory>(server_), clock_);
  }

  std::shared_ptr<FakeServer> server_ = std::make_shared<FakeServer>();
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
};

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TEST_F(PoolLeakSnapshotTest, OldestHeldAgeCountsConnectionsThatAreNotLeaked) {
  auto pool = make_pool(4);
  ASSERT_TRUE(pool->wait_until_ready());
  EXPECT_EQ(pool->get_statistics().oldest_held_seconds, 0.0);
  auto older = pool->acquire();
  clock_->advance(5s);
  auto newer = pool->acquire();
  clock_->advance(2s);
  const auto s = pool->get_statistics();
  EXPECT_DOUBLE_EQ(s.oldest_held_seconds, 7.0);
  EXPECT_TRUE(s.leaked.empty());
  EXPECT_TRUE(s.leak_sites.empty());
  older.release();
  EXPECT_DOUBLE_EQ(pool->get_statistics().oldest_held_seconds, 2.0);
  newer.release();
  EXPECT_EQ(pool->get_statistics().oldest_held_seconds, 0.0);
}

TEST_F(PoolLeakSnapshotTest, LeakedConnectionNamesItsAcquisitionSite) {
  auto pool = make_pool(4);
  ASSERT_TRUE(pool->wait_until_ready());
  const std::uint32_t acquire_line = __LINE__ + 1;
  auto leaked = pool->acquire();
  clock_->advance(31s);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().leaked_connections == 1; }));
  clock_->advance(4s);
  const auto s = pool->get_statistics();
  ASSERT_EQ(s.leaked.size(), 1u);
  EXPECT_EQ(s.leaked[0].connection_id, leaked.id());
  EXPECT_DOUBLE_EQ(s.leaked[0].held_seconds, 35.0);
  EXPECT_TRUE(ends_with(s.leaked[0].file, "pool_leak_snapshot_test.cc")) << s.leaked[0].file;
  EXPECT_EQ(s.leaked[0].line, acquire_line);
  EXPECT_NE(s.leaked[0].function.find("LeakedConnectionNamesItsAcquisitionSite"), std::string::npos)
      << s.leaked[0].function;
  ASSERT_EQ(s.leak_sites.size(), 1u);
  EXPECT_EQ(s.leak_sites[0].line, acquire_line);
  EXPECT_EQ(s.leak_sites[0].connections, 1u);
  EXPECT_DOUBLE_EQ(s.leak_sites[0].oldest_held_seconds, 35.0);
  EXPECT_DOUBLE_EQ(s.oldest_held_seconds, 35.0);

  leaked.release();
  const auto after = pool->get_statistics();
  EXPECT_TRUE(after.leaked.empty());
  EXPECT_TRUE(after.leak_sites.empty());
  EXPECT_EQ(after.leaks_returned, 1u);
}

TEST_F(PoolLeakSnapshotTest, SnapshotIsBoundedAndKeepsTheOldestAndBusiest) {
  auto pool = make_pool(40);
  ASSERT_TRUE(pool->wait_until_ready());
  // Seven call sites, one per line.
  // clang-format off
  const std::vector<std::function<PooledConnection()>> sites = {
      [&] { return pool->acquire(); },
      [&] { return pool->acquire(); },
      [&] { return pool->acquire(); },
      [&] { return pool->acquire(); },
      [&] { return pool->acquire(); },
      [&] { return pool->acquire(); },
      [&] { return pool->acquire(); },
  };
  // clang-format on
  std::vector<PooledConnection> held;
  for (int i = 0; i < 6; ++i) held.push_back(sites[0]());  // the busiest site, and the oldest
  clock_->advance(1s);
  for (std::size_t site = 1; site < sites.size(); ++site) {
    held.push_back(sites[site]());
    held.push_back(sites[site]());
  }
  clock_->advance(31s);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().leaked_connections == 18; }));
  const auto s = pool->get_statistics();
  ASSERT_EQ(s.leaked.size(), kMaxLeakedConnectionsReported);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(s.leaked[i].held_seconds, 32.0);
  for (std::size_t i = 1; i < s.leaked.size(); ++i) {
    EXPECT_GE(s.leaked[i - 1].held_seconds, s.leaked[i].held_seconds);
  }
  ASSERT_EQ(s.leak_sites.size(), kMaxLeakSitesReported);
  EXPECT_EQ(s.leak_sites[0].connections, 6u);
  EXPECT_EQ(s.leak_sites[0].line, s.leaked[0].line);
  for (std::size_t i = 1; i < s.leak_sites.size(); ++i) {
    EXPECT_EQ(s.leak_sites[i].connections, 2u);
    EXPECT_NE(s.leak_sites[i].line, s.leak_sites[0].line);
  }
}

}  // namespace
}  // namespace poolscope
