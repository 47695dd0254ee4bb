// Run-time resize and drain with the fake connection factory and clock.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "fakes.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::FakeClock;
using testing::FakeFactory;
using testing::FakeServer;

class PoolResizeTest : public ::testing::Test {
 protected:
  PoolConfig config(std::size_t min_size, std::size_t max_size) {
    PoolConfig c;
    c.min_size = min_size;
    c.max_size = max_size;
    c.acquire_timeout = 5s;
    return c;
  }

  std::unique_ptr<Pool> make_pool(PoolConfig c) {
    return std::make_unique<Pool>(std::move(c), std::make_shared<FakeFactory>(server_), clock_);
  }

  static bool consistent(const PoolStatistics& s) {
    return s.total_connections == s.idle_connections + s.active_connections &&
           s.connections_created == s.total_connections + closed_total(s);
  }

  static std::uint64_t closed_total(const PoolStatistics& s) {
    std::uint64_t sum = 0;
    for (const auto count : s.connections_closed) sum += count;
    return sum;
  }

  std::shared_ptr<FakeServer> server_ = std::make_shared<FakeServer>();
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
};

TEST_F(PoolResizeTest, ShrinkingNeverClosesAConnectionInUse) {
  auto pool = make_pool(config(1, 4));
  ASSERT_TRUE(pool->wait_until_ready());
  std::vector<PooledConnection> held;
  for (int i = 0; i < 4; ++i) held.push_back(pool->acquire());

  pool->set_max_size(2);
  auto s = pool->get_statistics();
  EXPECT_EQ(s.max_size, 2u);
  EXPECT_EQ(s.total_connections, 4u);  // all four are in use: none is closed
  EXPECT_EQ(s.closed(CloseReason::kResize), 0u);
  EXPECT_EQ(server_->closed.load(), 0);
  for (auto& handle : held) EXPECT_TRUE(handle.connection().is_open());

  held[0].release();
  held[1].release();
  s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kResize), 2u);  // the surplus, as it came back
  EXPECT_EQ(server_->closed.load(), 2);
  EXPECT_EQ(s.total_connections, 2u);
  EXPECT_TRUE(consistent(s));

  held[2].release();  // within max_size now: kept
  s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kResize), 2u);
  EXPECT_EQ(s.total_connections, 2u);
  EXPECT_EQ(s.idle_connections, 1u);
  EXPECT_EQ(s.resizes, 1u);
  EXPECT_TRUE(consistent(s));
}

TEST_F(PoolResizeTest, ShrinkingClosesSurplusIdleConnectionsAtOnce) {
  auto pool = make_pool(config(1, 4));
  ASSERT_TRUE(pool->wait_until_ready());
  {
    std::vector<PooledConnection> held;
    for (int i = 0; i < 4; ++i) held.push_back(pool->acquire());
  }
  ASSERT_EQ(pool->get_statistics().idle_connections, 4u);
  pool->set_max_size(2);
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.total_connections, 2u);
  EXPECT_EQ(s.idle_connections, 2u);
  EXPECT_EQ(s.closed(CloseReason::kResize), 2u);
  EXPECT_TRUE(consistent(s));
}

TEST_F(PoolResizeTest, ShrunkPoolNeverLendsMoreThanTheNewMaximum) {
  auto pool = make_pool(config(1, 3));
  ASSERT_TRUE(pool->wait_until_ready());
  std::vector<PooledConnection> held;
  for (int i = 0; i < 3; ++i) held.push_back(pool->acquire());
  pool->set_max_size(1);
  held.pop_back();
  held.pop_back();  // two come back and are closed; one is still lent out
  std::atomic<bool> served{false};
  std::thread waiter([&] {
    auto handle = pool->acquire();
    served = true;
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
  auto s = pool->get_statistics();
  EXPECT_FALSE(served.load());
  EXPECT_EQ(s.total_connections, 1u);
  EXPECT_EQ(s.pending_connections, 0u);  // no connection is opened beyond max_size
  held.clear();
  waiter.join();
  EXPECT_TRUE(served.load());
  s = pool->get_statistics();
  EXPECT_EQ(s.total_connections, 1u);
  EXPECT_EQ(s.peak_active_connections, 3u);
}

TEST_F(PoolResizeTest, GrowingServesWaitersWithNewConnections) {
  auto pool = make_pool(config(1, 1));
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<std::uint64_t> served_id{0};
  std::thread waiter([&] { served_id = pool->acquire().id(); });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));

  pool->set_max_size(2);
  waiter.join();  // served without the held connection coming back
  EXPECT_NE(served_id.load(), 0u);
  EXPECT_NE(served_id.load(), held.id());
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.max_size, 2u);
  EXPECT_EQ(s.total_connections, 2u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
}

TEST_F(PoolResizeTest, RaisingMinSizeOpensConnectionsInTheBackground) {
  auto pool = make_pool(config(1, 4));
  ASSERT_TRUE(pool->wait_until_ready());
  pool->set_min_size(3);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 3; }));
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.min_size, 3u);
  EXPECT_EQ(s.resizes, 1u);
}

TEST_F(PoolResizeTest, InvalidSizesAreRejectedWithTheReason) {
  auto pool = make_pool(config(2, 4));
  ASSERT_TRUE(pool->wait_until_ready());
  auto message_of = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const ConfigError& error) {
      // A run-time resize names the field it was for, like a config built in code.
      return error.field() + ": " + error.what();
    }
    return "no ConfigError";
  };
  EXPECT_EQ(message_of([&] { pool->set_max_size(0); }),
            "max_size: invalid max_size='0': expected a whole number from 1 to 10000");
  EXPECT_EQ(message_of([&] { pool->set_max_size(10001); }),
            "max_size: invalid max_size='10001': expected a whole number from 1 to 10000");
  EXPECT_EQ(message_of([&] { pool->set_max_size(1); }),
            "max_size: invalid max_size='1': must not be below min_size (2); lower min_size first");
  EXPECT_EQ(message_of([&] { pool->set_min_size(5); }),
            "min_size: invalid min_size='5': must not exceed max_size (4); raise max_size first");
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.min_size, 2u);
  EXPECT_EQ(s.max_size, 4u);
  EXPECT_EQ(s.resizes, 0u);
}

TEST_F(PoolResizeTest, DrainClosesIdleConnectionsNowAndLentOnesWhenReturned) {
  auto pool = make_pool(config(2, 4));
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  const std::uint64_t held_id = held.id();
  const std::uint64_t idle_id = [&] { return pool->acquire().id(); }();

  const auto result = pool->drain();
  EXPECT_EQ(result.closed_idle, 1u);
  EXPECT_EQ(result.replaced_later, 1u);
  auto s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kDrain), 1u);
  EXPECT_EQ(s.drains, 1u);
  EXPECT_TRUE(held.connection().is_open());  // the caller is never interrupted
  // The idle one is replaced up to min_size.
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 2; }));

  held.release();
  s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kDrain), 2u);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 2; }));
  for (int i = 0; i < 6; ++i) {
    const auto id = pool->acquire().id();
    EXPECT_NE(id, held_id);
    EXPECT_NE(id, idle_id);
  }
  EXPECT_TRUE(consistent(pool->get_statistics()));
}

TEST_F(PoolResizeTest, ConnectionOpenedWhileDrainingIsDiscardedAndOpenedAgain) {
  std::atomic<bool> hold_connect{false};
  std::atomic<int> connects_held{0};
  server_->before_connect = [&] {
    if (!hold_connect) return;
    ++connects_held;
    while (hold_connect) std::this_thread::sleep_for(1ms);
  };
  auto pool = make_pool(config(1, 2));
  ASSERT_TRUE(pool->wait_until_ready());
  auto busy = pool->acquire();
  hold_connect = true;
  std::atomic<std::uint64_t> served_id{0};
  std::thread waiter([&] { served_id = pool->acquire().id(); });
  ASSERT_TRUE(eventually([&] { return connects_held.load() == 1; }));
  pool->drain();  // while the waiter's connection is being opened
  hold_connect = false;
  waiter.join();
  // The connection opened across the drain was dropped, a fresh one served.
  EXPECT_EQ(server_->connects.load(), 3);
  EXPECT_EQ(server_->closed.load(), 1);
  EXPECT_NE(served_id.load(), busy.id());
  busy.release();
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kDrain), 1u);  // `busy`, when it came back
  EXPECT_EQ(server_->closed.load(), 2);
  EXPECT_TRUE(consistent(s));
}

TEST_F(PoolResizeTest, ResizeAndDrainAfterShutdownThrowPoolClosed) {
  auto pool = make_pool(config(1, 2));
  ASSERT_TRUE(pool->wait_until_ready());
  pool->shutdown();
  EXPECT_THROW(pool->set_max_size(3), PoolClosed);
  EXPECT_THROW(pool->set_min_size(1), PoolClosed);
  EXPECT_THROW(pool->drain(), PoolClosed);
}

TEST_F(PoolResizeTest, ManyThreadsThroughResizesAndDrainsLeaveConsistentStatistics) {
  auto pool = make_pool(config(2, 8));
  ASSERT_TRUE(pool->wait_until_ready());
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 16; ++i) {
    workers.emplace_back([&] {
      while (!stop) {
        try {
          auto handle = pool->acquire(60s);
          std::this_thread::yield();
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  }
  for (int round = 0; round < 20; ++round) {
    pool->set_max_size(round % 2 == 0 ? 3 : 8);
    if (round % 4 == 0) pool->drain();
    std::this_thread::sleep_for(2ms);
  }
  stop = true;
  for (auto& worker : workers) worker.join();
  EXPECT_EQ(errors.load(), 0);
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.active_connections, 0u);
  EXPECT_EQ(s.waiting_requests, 0u);
  EXPECT_LE(s.total_connections, 8u);
  EXPECT_EQ(s.total_acquisitions, s.total_releases);
  EXPECT_EQ(s.resizes, 20u);
  EXPECT_EQ(s.drains, 5u);
  EXPECT_TRUE(consistent(s));
}

}  // namespace
}  // namespace poolscope
