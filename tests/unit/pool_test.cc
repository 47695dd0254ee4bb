#include "poolscope/pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fakes.h"
#include "poolscope/error.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::FakeClock;
using testing::FakeConnection;
using testing::FakeFactory;
using testing::FakeServer;

/// A FakeClock whose waits can be held: while the gate is closed, a thread
/// that starts waiting (an acquire() in the queue, the pool's background
/// threads) gives up the pool lock and stays put, whatever it is notified
/// of, until the gate opens. That makes "the waiter has not run yet" a state
/// a test can hold, instead of a race it hopes to win.
class GatedClock final : public Clock {
 public:
  time_point now() const noexcept override { return fake_.now(); }
  std::chrono::system_clock::time_point wall_now() const noexcept override {
    return fake_.wall_now();
  }
  std::cv_status wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                            time_point deadline) override {
    {
      std::unique_lock gate(gate_mutex_);
      if (closed_) {
        lock.unlock();
        gate_cv_.wait(gate, [this] { return !closed_; });
        gate.unlock();
        lock.lock();
        return std::cv_status::no_timeout;  // callers treat it as a spurious wake-up
      }
    }
    return fake_.wait_until(cv, lock, deadline);
  }
  void advance(std::chrono::nanoseconds by) { fake_.advance(by); }
  void close_gate() {
    std::lock_guard gate(gate_mutex_);
    closed_ = true;
  }
  void open_gate() {
    {
      std::lock_guard gate(gate_mutex_);
      closed_ = false;
    }
    gate_cv_.notify_all();
  }

 private:
  FakeClock fake_;
  std::mutex gate_mutex_;
  std::condition_variable gate_cv_;
  bool closed_ = false;
};

class PoolTest : public ::testing::Test {
 protected:
  PoolConfig config() {
    PoolConfig c;
    c.min_size = 2;
    c.max_size = 4;
    c.acquire_timeout = 5s;
    c.reconnect_backoff = {1s, 2s, 4s};
    return c;
  }

  std::unique_ptr<Pool> make_pool(PoolConfig c) {
    auto pool =
        std::make_unique<Pool>(std::move(c), std::make_shared<FakeFactory>(server_), clock_);
    return pool;
  }

  // After a clock advance past the health-check interval, the maintainer
  // validates an idle connection; seeing that proves a whole maintenance pass
  // (leak scan, expiry) ran after the advance.
  void wait_for_maintenance_pass(int before) {
    ASSERT_TRUE(eventually([&] { return server_->validations.load() > before; }));
  }

  // Calls acquire(1s) on another thread, lets the fake clock pass the
  // timeout once the call waits, and returns what its AcquireTimeout said
  // (database_error stays "unset" when none was thrown).
  std::pair<std::string, std::optional<std::string>> timeout_of_one_waiter(Pool& pool) {
    std::string message;
    std::optional<std::string> database_error = "unset";
    std::thread waiter([&] {
      try {
        pool.acquire(1s);
      } catch (const AcquireTimeout& error) {
        message = error.what();
        database_error = error.database_error();
      }
    });
    EXPECT_TRUE(eventually([&] { return pool.get_statistics().waiting_requests == 1; }));
    clock_->advance(1500ms);
    waiter.join();
    return {message, database_error};
  }

  static bool consistent(const PoolStatistics& s) {
    return s.total_connections == s.idle_connections + s.active_connections;
  }

  std::shared_ptr<FakeServer> server_ = std::make_shared<FakeServer>();
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
};

TEST_F(PoolTest, OpensMinSizeConnectionsAndBecomesHealthy) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kHealthy; }));
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.total_connections, 2u);
  EXPECT_EQ(s.idle_connections, 2u);
  EXPECT_EQ(s.health, HealthStatus::kHealthy);
  EXPECT_EQ(s.connections_created, 2u);
  EXPECT_TRUE(can_serve(s));
}

TEST_F(PoolTest, StateAndHealthOfASnapshotComeFromOneEvaluation) {
  auto c = config();
  c.max_size = 10;  // three in use leave 70% headroom: degraded (below 80%)
  c.min_size = 3;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kHealthy; }));
  // No maintenance tick runs (the clock stands still): the load changes
  // between ticks, and every snapshot must still agree with itself.
  auto a = pool->acquire();
  auto b = pool->acquire();
  auto d = pool->acquire();
  const auto loaded = pool->get_statistics();
  EXPECT_EQ(loaded.health, HealthStatus::kDegraded);
  EXPECT_EQ(loaded.state, PoolState::kDegraded);
  EXPECT_EQ(pool->state(), PoolState::kDegraded);
  a.release();
  b.release();
  d.release();
  const auto idle = pool->get_statistics();
  EXPECT_EQ(idle.health, HealthStatus::kHealthy);
  EXPECT_EQ(idle.state, PoolState::kHealthy);
  EXPECT_EQ(pool->state(), PoolState::kHealthy);
}

TEST_F(PoolTest, AcquireAndReleaseAreCounted) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  {
    auto handle = pool->acquire();
    ASSERT_TRUE(handle);
    const auto s = pool->get_statistics();
    EXPECT_EQ(s.active_connections, 1u);
    EXPECT_EQ(s.total_acquisitions, 1u);
    EXPECT_EQ(s.total_releases, 0u);
    EXPECT_TRUE(consistent(s));
  }
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.active_connections, 0u);
  EXPECT_EQ(s.total_releases, 1u);
  EXPECT_TRUE(consistent(s));
}

TEST_F(PoolTest, HandleIsMoveOnlyAndReleaseIsIdempotent) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  auto first = pool->acquire();
  const auto id = first.id();
  PooledConnection second = std::move(first);
  EXPECT_FALSE(first);
  EXPECT_EQ(second.id(), id);
  second.release();
  second.release();
  EXPECT_FALSE(second);
  EXPECT_EQ(pool->get_statistics().total_releases, 1u);
  EXPECT_THROW(second.connection(), std::logic_error);
}

TEST_F(PoolTest, ConnectionComesBackWhenAnExceptionUnwinds) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  try {
    auto handle = pool->acquire();
    throw std::runtime_error("query failed");
  } catch (const std::runtime_error&) {
  }
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.active_connections, 0u);
  EXPECT_EQ(s.total_acquisitions, s.total_releases);
}

TEST_F(PoolTest, GrowsUpToMaxSizeOnDemand) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  std::vector<PooledConnection> held;
  for (int i = 0; i < 4; ++i) held.push_back(pool->acquire());
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.total_connections, 4u);
  EXPECT_EQ(s.active_connections, 4u);
  EXPECT_EQ(s.health, HealthStatus::kUnhealthy);  // no headroom left at all
  EXPECT_TRUE(can_serve(s));                      // but load alone never means "cannot serve"
}

TEST_F(PoolTest, AcquireTimesOutWhenExhausted) {
  auto c = config();
  c.max_size = 1;
  c.min_size = 1;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<bool> timed_out{false};
  std::chrono::nanoseconds waited{};
  std::size_t waiting_in_snapshot = 0;
  std::thread waiter([&] {
    try {
      pool->acquire(2s);
    } catch (const AcquireTimeout& error) {
      waited = error.waited();
      waiting_in_snapshot = error.statistics().waiting_requests;
      timed_out = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
  clock_->advance(1s);
  EXPECT_FALSE(timed_out.load());
  clock_->advance(1500ms);
  waiter.join();
  EXPECT_TRUE(timed_out);
  EXPECT_GE(waited, 2s);
  EXPECT_EQ(waiting_in_snapshot, 0u);  // the timed-out waiter left the queue first
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.acquire_timeouts, 1u);
  EXPECT_EQ(s.error_count(ErrorType::kAcquireTimeout), 1u);
  EXPECT_EQ(s.waiting_requests, 0u);
  EXPECT_EQ(s.last_error, "Connection acquisition timeout");
}

TEST_F(PoolTest, ExhaustedTimeoutAdvisesOnThePoolNotTheDatabase) {
  auto c = config();
  c.max_size = 1;
  c.min_size = 1;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  const auto [message, database_error] = timeout_of_one_waiter(*pool);
  EXPECT_NE(message.find("POOL_MAX_SIZE"), std::string::npos) << message;
  EXPECT_EQ(database_error, std::nullopt);
}

TEST_F(PoolTest, TimeoutDuringAnOutageKeepsAndNamesTheConnectionError) {
  auto c = config();
  c.reconnect_backoff = {10s};  // no new attempt while the caller waits
  server_->down = true;
  auto pool = make_pool(c);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().connection_failures >= 1; }));
  const auto [message, database_error] = timeout_of_one_waiter(*pool);
  EXPECT_NE(message.find("fake server is down"), std::string::npos) << message;
  EXPECT_EQ(message.find("POOL_MAX_SIZE"), std::string::npos) << message;
  EXPECT_EQ(database_error, "Database connection refused: fake server is down");
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.acquire_timeouts, 1u);
  EXPECT_EQ(s.error_count(ErrorType::kAcquireTimeout), 1u);
  EXPECT_EQ(s.last_error, "Database connection refused: fake server is down");
}

TEST_F(PoolTest, BrokenConnectionIsClosedAndReplaced) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  std::uint64_t broken_id = 0;
  {
    auto handle = pool->acquire();
    broken_id = handle.id();
    dynamic_cast<FakeConnection&>(handle.connection()).break_it();
  }
  auto s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kBroken), 1u);
  EXPECT_EQ(s.error_count(ErrorType::kConnectionBroken), 1u);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 2; }));
  for (int i = 0; i < 10; ++i) EXPECT_NE(pool->acquire().id(), broken_id);
}

TEST_F(PoolTest, MarkBrokenDiscardsTheConnection) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  {
    auto handle = pool->acquire();
    handle.mark_broken();
  }
  EXPECT_EQ(pool->get_statistics().closed(CloseReason::kBroken), 1u);
}

TEST_F(PoolTest, ConnectionReturnedInsideATransactionIsNeverReused) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  std::uint64_t id = 0;
  {
    auto handle = pool->acquire();
    id = handle.id();
    dynamic_cast<FakeConnection&>(handle.connection()).begin_transaction();
  }
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.error_count(ErrorType::kTransactionLeftOpen), 1u);
  EXPECT_EQ(s.closed(CloseReason::kBroken), 1u);
  for (int i = 0; i < 10; ++i) EXPECT_NE(pool->acquire().id(), id);
}

TEST_F(PoolTest, ConnectionKilledWhileIdleIsNeverHandedOut) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  std::vector<std::uint64_t> old_ids;
  {
    auto a = pool->acquire();
    auto b = pool->acquire();
    old_ids = {a.id(), b.id()};
  }
  server_->terminate_all();  // like pg_terminate_backend on both backends
  clock_->advance(5ms);      // idle for longer than probe_idle_threshold (1 ms)
  // Hold as many connections as the pool may have: each old one must have
  // been met and refused on the way, none handed out.
  std::vector<PooledConnection> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(pool->acquire());
    EXPECT_EQ(std::count(old_ids.begin(), old_ids.end(), held.back().id()), 0);
  }
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.closed(CloseReason::kBroken), 2u);
  EXPECT_EQ(s.error_count(ErrorType::kConnectionBroken), 2u);
}

TEST_F(PoolTest, ConnectionUsedMomentsAgoIsHandedOutWithoutAProbe) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  { auto handle = pool->acquire(); }
  const int before = server_->probes.load();
  { auto handle = pool->acquire(); }  // released 0 ms ago (fake time)
  EXPECT_EQ(server_->probes.load(), before);
  clock_->advance(2ms);
  { auto handle = pool->acquire(); }
  EXPECT_EQ(server_->probes.load(), before + 1);
}

TEST_F(PoolTest, ZeroProbeThresholdProbesEveryHandOut) {
  auto c = config();
  c.probe_idle_threshold = 0ms;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  std::vector<std::uint64_t> old_ids;
  {
    auto a = pool->acquire();
    auto b = pool->acquire();
    old_ids = {a.id(), b.id()};
  }
  clock_->advance(1ns);  // any idleness at all
  server_->terminate_all();
  // The connection on top of the idle stack was used 1 ns ago: probed and
  // refused. (The other one may meet a replacement opened meanwhile first.)
  auto handle = pool->acquire();
  EXPECT_EQ(std::count(old_ids.begin(), old_ids.end(), handle.id()), 0);
  EXPECT_GE(pool->get_statistics().closed(CloseReason::kBroken), 1u);
}

TEST_F(PoolTest, LongIdleConnectionIsValidatedBeforeHandOut) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  const int before = server_->validations.load();
  { auto handle = pool->acquire(); }  // fresh: no validation
  EXPECT_EQ(server_->validations.load(), before);
  clock_->advance(1500ms);
  { auto handle = pool->acquire(); }
  EXPECT_GT(server_->validations.load(), before);
}

TEST_F(PoolTest, FailedValidationDiscardsAndHandsOutAnotherConnection) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  std::vector<std::uint64_t> old_ids;
  {
    auto a = pool->acquire();
    auto b = pool->acquire();
    old_ids = {a.id(), b.id()};
  }
  clock_->advance(1500ms);
  server_->fail_validation = true;  // idle ones fail; new ones come from connect()
  auto handle = pool->acquire();
  EXPECT_TRUE(handle);
  EXPECT_EQ(std::count(old_ids.begin(), old_ids.end(), handle.id()), 0);
  const auto s = pool->get_statistics();
  EXPECT_GE(s.closed(CloseReason::kValidation), 1u);
  EXPECT_GE(s.error_count(ErrorType::kValidationFailed), 1u);
}

TEST_F(PoolTest, ConnectionsPastTheirLifetimeAreRecycled) {
  auto c = config();
  c.max_connection_lifetime = 100s;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  clock_->advance(101s);
  ASSERT_TRUE(
      eventually([&] { return pool->get_statistics().closed(CloseReason::kLifetime) == 2; }));
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 2; }));
  EXPECT_EQ(pool->get_statistics().connections_created, 4u);
}

TEST_F(PoolTest, LifetimeIsJitteredByAtMostTenPercent) {
  auto c = config();
  c.max_connection_lifetime = 100s;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  const int before = server_->validations.load();
  clock_->advance(89s);  // below 90 % of the lifetime: nothing expires
  wait_for_maintenance_pass(before);
  EXPECT_EQ(pool->get_statistics().closed(CloseReason::kLifetime), 0u);
}

TEST_F(PoolTest, IdleConnectionsAboveMinSizeAreClosed) {
  auto c = config();
  c.max_idle_time = 60s;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  {
    std::vector<PooledConnection> held;
    for (int i = 0; i < 4; ++i) held.push_back(pool->acquire());
  }
  EXPECT_EQ(pool->get_statistics().total_connections, 4u);
  clock_->advance(61s);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 2; }));
  EXPECT_EQ(pool->get_statistics().closed(CloseReason::kIdle), 2u);
}

TEST_F(PoolTest, RecoversWithBackoffWhenTheDatabaseComesBack) {
  server_->down = true;
  auto pool = make_pool(config());
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().connection_failures >= 1; }));
  clock_->advance(2s);  // past the init timeout
  EXPECT_FALSE(pool->wait_until_ready());
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kRecovering; }));
  EXPECT_FALSE(can_serve(pool->get_statistics()));
  // The first retry came 1 s after the first failure; then the delays are
  // 2 s, 4 s, and the last one repeats. Each step lets exactly one attempt
  // through. An attempt is counted when it starts, its failure (which fixes
  // the time of the next one) when it ends: wait for the failure.
  const auto attempts = [&] { return pool->get_statistics().reconnect_attempts; };
  const auto failures = [&] { return pool->get_statistics().connection_failures; };
  ASSERT_TRUE(eventually([&] { return attempts() == 1 && failures() == 2; }));
  std::uint64_t expected = 1;
  for (auto step : {2s, 4s, 4s}) {
    clock_->advance(step - 1ms);
    EXPECT_FALSE(eventually([&] { return attempts() > expected; }, 50ms)) << "retried too early";
    clock_->advance(1ms);
    ++expected;
    ASSERT_TRUE(eventually([&] { return attempts() == expected && failures() == expected + 1; }))
        << "attempts: " << attempts() << ", failures: " << failures();
  }
  server_->down = false;
  clock_->advance(4s);
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kHealthy; }));
  // Able to serve from the first connection on; min_size follows right after.
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().total_connections == 2; }));
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.recent_errors, 0u);  // the outage is over, not a recent error
  EXPECT_EQ(s.error_count(ErrorType::kConnectionFailed),
            s.connection_failures + 1);  // + init timeout
}

TEST_F(PoolTest, WaitingWhileThePoolStartsIsNotCountedAsLoad) {
  std::atomic<bool> caller_queued{false};
  server_->before_connect = [this, &caller_queued] {
    while (!caller_queued) std::this_thread::sleep_for(1ms);
    clock_->advance(300ms);  // each connect takes 300 ms of fake time
  };
  auto pool = make_pool(config());
  std::thread caller([&] { auto handle = pool->acquire(); });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
  caller_queued = true;
  caller.join();
  ASSERT_TRUE(pool->wait_until_ready());
  const auto s = pool->get_statistics();
  EXPECT_GE(s.peak_wait_time_ms, 300.0);       // the lifetime statistics keep it
  EXPECT_EQ(s.recent_peak_wait_time_ms, 0.0);  // health does not: start-up is not load
  EXPECT_EQ(s.health, HealthStatus::kHealthy);
}

TEST_F(PoolTest, WaiterIsServedWhenTheDatabaseReturnsWithinItsTimeout) {
  auto c = config();
  c.min_size = 0;
  c.acquire_timeout = 30s;
  server_->down = true;
  auto pool = make_pool(c);
  std::atomic<bool> served{false};
  std::thread waiter([&] {
    auto handle = pool->acquire();
    served = true;
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().connection_failures >= 1; }));
  server_->down = false;
  clock_->advance(1s);
  waiter.join();
  EXPECT_TRUE(served);
  EXPECT_EQ(pool->get_statistics().acquire_timeouts, 0u);
}

TEST_F(PoolTest, BackgroundValidationNoticesADeadServerWithoutTraffic) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  server_->down = true;
  clock_->advance(6s);
  ASSERT_TRUE(
      eventually([&] { return pool->get_statistics().closed(CloseReason::kValidation) == 2; }));
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kRecovering; }));
  EXPECT_EQ(pool->get_statistics().total_connections, 0u);
}

TEST_F(PoolTest, LeakIsReportedOnceAndCountedWhenReturned) {
  auto c = config();
  c.leak_detection_timeout = 30s;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  auto leaked = pool->acquire();
  clock_->advance(31s);
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().leaks_detected == 1; }));
  EXPECT_EQ(pool->get_statistics().leaked_connections, 1u);
  const int before = server_->validations.load();
  clock_->advance(6s);
  wait_for_maintenance_pass(before);
  EXPECT_EQ(pool->get_statistics().leaks_detected, 1u);  // reported once, not every pass
  leaked.release();
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.leaks_returned, 1u);
  EXPECT_EQ(s.leaked_connections, 0u);
}

TEST_F(PoolTest, NoLeakIsReportedWhenDetectionIsOff) {
  auto c = config();
  c.enable_leak_detection = false;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  const int before = server_->validations.load();
  clock_->advance(120s);
  wait_for_maintenance_pass(before);
  EXPECT_EQ(pool->get_statistics().leaks_detected, 0u);
}

TEST_F(PoolTest, ShutdownRefusesNewAcquisitionsAndWakesWaiters) {
  auto c = config();
  c.max_size = 1;
  c.min_size = 1;
  c.shutdown_timeout = 0s;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<bool> closed_error{false};
  std::thread waiter([&] {
    try {
      pool->acquire();
    } catch (const PoolClosed&) {
      closed_error = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
  pool->shutdown();
  waiter.join();
  EXPECT_TRUE(closed_error);
  EXPECT_THROW(pool->acquire(), PoolClosed);
  EXPECT_EQ(pool->state(), PoolState::kTerminated);
  held.release();  // a connection returned after termination is closed
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.total_connections, 0u);
  EXPECT_EQ(s.closed(CloseReason::kShutdown), 1u);
}

TEST_F(PoolTest, ShutdownWaitsForActiveConnections) {
  auto pool = make_pool(config());
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::thread stopper([&] { pool->shutdown(); });
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kShuttingDown; }));
  EXPECT_EQ(pool->get_statistics().active_connections, 1u);
  held.release();
  stopper.join();
  EXPECT_EQ(pool->state(), PoolState::kTerminated);
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.total_connections, 0u);
  EXPECT_EQ(s.closed(CloseReason::kShutdown), 2u);
}

TEST_F(PoolTest, ShutdownGivesUpOnHeldConnectionsAfterItsTimeout) {
  auto c = config();
  c.shutdown_timeout = 10s;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::thread stopper([&] { pool->shutdown(); });
  ASSERT_TRUE(eventually([&] { return pool->state() == PoolState::kShuttingDown; }));
  clock_->advance(11s);
  stopper.join();
  EXPECT_EQ(pool->state(), PoolState::kTerminated);
  EXPECT_EQ(pool->get_statistics().active_connections, 1u);
}

TEST_F(PoolTest, HandleMayOutliveThePool) {
  PooledConnection survivor;
  {
    auto c = config();
    c.shutdown_timeout = 0s;
    auto pool = make_pool(c);
    ASSERT_TRUE(pool->wait_until_ready());
    survivor = pool->acquire();
  }
  survivor.release();  // must not touch freed memory (ASan checks this)
  EXPECT_FALSE(survivor);
}

TEST_F(PoolTest, HandlesReturnedWhileThePoolIsDestroyedFindTheirPool) {
  // Releases race with ~Pool: one hands its connection to a waiter (woken
  // after the unlock), one closes a broken connection, the rest go idle or
  // are closed by the shutdown. Whichever comes last frees the pool's state
  // (ASan and TSan check this).
  for (int round = 0; round < 20; ++round) {
    auto c = config();
    c.max_size = 3;
    c.shutdown_timeout = 0s;
    auto pool = make_pool(c);
    ASSERT_TRUE(pool->wait_until_ready());
    std::vector<PooledConnection> handles;
    for (int i = 0; i < 3; ++i) handles.push_back(pool->acquire());
    handles[0].mark_broken();
    std::atomic<bool> go{false}, acquired{false}, destroying{false};
    std::vector<std::thread> threads;
    threads.emplace_back([&, raw = pool.get()] {
      auto handle = raw->acquire(5s);  // waits: every connection is lent out
      acquired = true;
      while (!destroying.load()) std::this_thread::yield();
      handle.release();
    });
    ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
    for (auto& handle : handles) {
      threads.emplace_back([&go, &handle] {
        while (!go.load()) std::this_thread::yield();
        handle.release();
      });
    }
    go = true;
    ASSERT_TRUE(eventually([&] { return acquired.load(); }));
    destroying = true;
    pool.reset();
    for (auto& thread : threads) thread.join();
    for (const auto& handle : handles) EXPECT_FALSE(handle);
  }
}

TEST_F(PoolTest, ManyThreadsWithRandomExceptionsLeakNothing) {
  auto c = config();
  c.max_size = 4;
  auto pool = make_pool(c);
  ASSERT_TRUE(pool->wait_until_ready());
  std::atomic<int> thrown{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      for (int i = 0; i < 5000; ++i) {
        try {
          auto handle = pool->acquire();
          if (random() % 7 == 0) throw std::runtime_error("boom");
          if (random() % 501 == 0) handle.mark_broken();
        } catch (const std::runtime_error&) {
          ++thrown;
        }
        const auto s = pool->get_statistics();
        ASSERT_EQ(s.total_connections, s.idle_connections + s.active_connections);
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto s = pool->get_statistics();
  EXPECT_GT(thrown.load(), 0);
  EXPECT_EQ(s.total_acquisitions, 40000u);
  EXPECT_EQ(s.total_acquisitions, s.total_releases);
  EXPECT_EQ(s.active_connections, 0u);
  EXPECT_LE(s.total_connections, 4u);
}

// ---------------------------------------------------------------- queue policy

class QueuePolicyTest : public PoolTest, public ::testing::WithParamInterface<QueuePolicy> {
 protected:
  PoolConfig single_connection() {
    auto c = config();
    c.queue_policy = GetParam();
    c.barging_wait_bound = 10ms;
    c.min_size = 1;
    c.max_size = 1;
    return c;
  }
};

TEST_P(QueuePolicyTest, WaitersAmongThemselvesAreServedInArrivalOrder) {
  auto pool = make_pool(single_connection());
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto handle = pool->acquire();
      std::lock_guard lock(order_mutex);
      order.push_back(i);
    });
    ASSERT_TRUE(
        eventually([&] { return pool->get_statistics().waiting_requests == std::size_t(i + 1); }));
  }
  held.release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.total_acquisitions, 9u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
  EXPECT_TRUE(consistent(s));
}

TEST_P(QueuePolicyTest, WaitsEndAtTheAcquireTimeout) {
  auto pool = make_pool(single_connection());
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<int> timed_out{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      try {
        pool->acquire(2s);
      } catch (const AcquireTimeout&) {
        ++timed_out;
      }
    });
  }
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 3; }));
  clock_->advance(1s);
  EXPECT_EQ(timed_out.load(), 0);
  clock_->advance(1500ms);
  for (auto& t : waiters) t.join();
  EXPECT_EQ(timed_out.load(), 3);
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.acquire_timeouts, 3u);
  EXPECT_EQ(s.waiting_requests, 0u);
  // The connection is still there for the next caller.
  held.release();
  auto again = pool->acquire(1s);
  EXPECT_EQ(pool->get_statistics().active_connections, 1u);
}

INSTANTIATE_TEST_SUITE_P(BothPolicies, QueuePolicyTest,
                         ::testing::Values(QueuePolicy::kBarging, QueuePolicy::kFifo),
                         [](const ::testing::TestParamInfo<QueuePolicy>& info) {
                           return std::string(to_string(info.param));
                         });

class GatedPoolTest : public ::testing::Test {
 protected:
  // The pool is a member so that TearDown opens the gate before it shuts down.
  Pool& make_pool(QueuePolicy policy) {
    PoolConfig c;
    c.min_size = 1;
    c.max_size = 1;
    c.acquire_timeout = 5s;
    c.queue_policy = policy;
    c.barging_wait_bound = 10ms;
    pool_ = std::make_unique<Pool>(std::move(c), std::make_shared<FakeFactory>(server_), clock_);
    return *pool_;
  }

  // Holds the pool's only connection and queues one waiter that cannot run
  // until the gate opens; returns once the waiter is in the queue.
  void queue_a_held_waiter(Pool& pool, std::atomic<bool>& served) {
    clock_->close_gate();
    waiter_ = std::thread([&pool, &served] {
      auto handle = pool.acquire();
      served = true;
    });
    ASSERT_TRUE(eventually([&] { return pool.get_statistics().waiting_requests == 1; }));
  }

  void TearDown() override {
    clock_->open_gate();
    if (waiter_.joinable()) waiter_.join();
    if (late_.joinable()) late_.join();
  }

  std::shared_ptr<FakeServer> server_ = std::make_shared<FakeServer>();
  std::shared_ptr<GatedClock> clock_ = std::make_shared<GatedClock>();
  std::thread waiter_;
  std::thread late_;  // a second caller, queued behind the first waiter
  std::unique_ptr<Pool> pool_;
};

TEST_F(GatedPoolTest, BargingLetsACallerTakeAConnectionReturnedWhileTheFirstWaiterIsYoung) {
  Pool* pool = &make_pool(QueuePolicy::kBarging);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<bool> served{false};
  queue_a_held_waiter(*pool, served);
  clock_->advance(9ms);  // the waiter is younger than the 10 ms bound
  held.release();
  auto s = pool->get_statistics();
  ASSERT_EQ(s.idle_connections, 1u);  // left free, not handed to the sleeping waiter
  EXPECT_EQ(s.waiting_requests, 1u);
  auto barged = pool->acquire(1ms);  // taken at once by the running caller
  s = pool->get_statistics();
  EXPECT_EQ(s.active_connections, 1u);
  EXPECT_EQ(s.waiting_requests, 1u);
  EXPECT_FALSE(served.load());
  clock_->open_gate();
  barged.release();
  waiter_.join();
  EXPECT_TRUE(served.load());  // nudged, it took the connection returned next
  s = pool->get_statistics();
  EXPECT_EQ(s.total_acquisitions, 3u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
}

TEST_F(GatedPoolTest, BargingHandsOffOnceTheFirstWaiterHasWaitedTheBound) {
  Pool* pool = &make_pool(QueuePolicy::kBarging);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<bool> served{false};
  queue_a_held_waiter(*pool, served);
  clock_->advance(10ms);
  held.release();
  // Lent to the waiter under the release's lock, although it has not run.
  auto s = pool->get_statistics();
  EXPECT_EQ(s.active_connections, 1u);
  EXPECT_EQ(s.idle_connections, 0u);
  EXPECT_EQ(s.waiting_requests, 0u);
  // A caller arriving now must queue behind it.
  std::atomic<bool> late_served{false};
  late_ = std::thread([&] {
    auto handle = pool->acquire();
    late_served = true;
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
  EXPECT_FALSE(late_served.load());
  clock_->open_gate();
  waiter_.join();
  late_.join();
  EXPECT_TRUE(served.load());
  EXPECT_TRUE(late_served.load());
}

TEST_F(GatedPoolTest, BargingStopsNewCallersPassingAWaiterThatHasWaitedTheBound) {
  Pool* pool = &make_pool(QueuePolicy::kBarging);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<bool> served{false};
  queue_a_held_waiter(*pool, served);
  held.release();  // young waiter: the connection stays idle, the waiter is nudged
  ASSERT_EQ(pool->get_statistics().idle_connections, 1u);
  clock_->advance(10ms);  // ...but it has not run by the time it reaches the bound
  // A caller arriving now queues behind it instead of taking the idle connection.
  std::atomic<bool> late_served{false};
  late_ = std::thread([&] {
    auto handle = pool->acquire();
    late_served = true;
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 2; }));
  auto s = pool->get_statistics();
  EXPECT_EQ(s.idle_connections, 1u);
  EXPECT_EQ(s.active_connections, 0u);
  EXPECT_FALSE(late_served.load());
  clock_->open_gate();
  waiter_.join();
  late_.join();
  EXPECT_TRUE(served.load());
  EXPECT_TRUE(late_served.load());
  EXPECT_EQ(pool->get_statistics().acquire_timeouts, 0u);
}

TEST_F(GatedPoolTest, BargingNudgeOfAWaiterThatTimedOutGoesToTheNextWaiter) {
  Pool* pool = &make_pool(QueuePolicy::kBarging);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  clock_->close_gate();
  std::atomic<bool> first_timed_out{false};
  waiter_ = std::thread([&] {
    try {
      pool->acquire(2s);
    } catch (const AcquireTimeout&) {
      first_timed_out = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 1; }));
  std::atomic<bool> second_served{false};
  late_ = std::thread([&] {
    try {
      auto handle = pool->acquire(30s);
      second_served = true;
    } catch (const AcquireTimeout&) {
    }
  });
  ASSERT_TRUE(eventually([&] { return pool->get_statistics().waiting_requests == 2; }));
  held.release();       // idle; the first waiter is nudged but cannot run yet
  clock_->advance(3s);  // past the first waiter's deadline, well inside the second's
  clock_->open_gate();
  // No further time passes: the second waiter is served only if the nudge
  // reached it.
  const bool served = eventually([&] { return second_served.load(); });
  if (!served) clock_->advance(60s);  // let it time out instead of hanging
  EXPECT_TRUE(served);
  waiter_.join();
  late_.join();
  EXPECT_TRUE(first_timed_out.load());
  EXPECT_EQ(pool->get_statistics().acquire_timeouts, 1u);
}

TEST_F(GatedPoolTest, FifoHandsEveryReturnedConnectionToTheFirstWaiter) {
  Pool* pool = &make_pool(QueuePolicy::kFifo);
  ASSERT_TRUE(pool->wait_until_ready());
  auto held = pool->acquire();
  std::atomic<bool> served{false};
  queue_a_held_waiter(*pool, served);
  held.release();  // no time has passed: the waiter is as young as can be
  const auto s = pool->get_statistics();
  EXPECT_EQ(s.active_connections, 1u);
  EXPECT_EQ(s.idle_connections, 0u);
  EXPECT_EQ(s.waiting_requests, 0u);
  clock_->open_gate();
  waiter_.join();
  EXPECT_TRUE(served.load());
}

}  // namespace
}  // namespace poolscope
