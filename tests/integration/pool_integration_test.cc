// The pool against the real PostgreSQL started by scripts/test.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
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
using testing::shared_database_url;

PoolConfig config() {
  PoolConfig c;
  c.database_url = shared_database_url();
  c.max_size = 10;
  c.acquire_timeout = 20s;
  return c;
}

int select_one(PooledConnection& connection) {
  pqxx::nontransaction tx(*connection);
  return tx.exec("SELECT 1")[0][0].as<int>();
}

TEST(PoolIntegration, RunsQueriesAndSetsStatementTimeout) {
  auto c = config();
  c.command_timeout = 45s;
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  auto connection = pool.acquire();
  EXPECT_EQ(select_one(connection), 1);
  pqxx::nontransaction tx(*connection);
  EXPECT_EQ(tx.exec("SHOW statement_timeout")[0][0].as<std::string>(), "45s");
  EXPECT_EQ(tx.exec("SHOW application_name")[0][0].as<std::string>(), "poolscope");
}

TEST(PoolIntegration, StatementTimeoutCancelsSlowQueries) {
  auto c = config();
  c.command_timeout = 200ms;
  Pool pool(c);
  auto connection = pool.acquire();
  pqxx::nontransaction tx(*connection);
  EXPECT_THROW(tx.exec("SELECT pg_sleep(5)"), pqxx::sql_error);
}

TEST(PoolIntegration, HundredThreadsShareTenConnectionsWithoutDeadlock) {
  Pool pool(config());
  ASSERT_TRUE(pool.wait_until_ready());
  std::atomic<int> queries{0};
  std::atomic<bool> inconsistent{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 100; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 30; ++i) {
        auto connection = pool.acquire();
        queries += select_one(connection);
        const auto s = pool.get_statistics();
        if (s.total_connections != s.idle_connections + s.active_connections ||
            s.total_connections > 10) {
          inconsistent = true;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto s = pool.get_statistics();
  EXPECT_EQ(queries.load(), 3000);
  EXPECT_FALSE(inconsistent.load());
  EXPECT_EQ(s.total_acquisitions, 3000u);
  EXPECT_EQ(s.total_releases, 3000u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
  EXPECT_LE(s.peak_active_connections, 10u);
  EXPECT_EQ(s.active_connections, 0u);
}

TEST(PoolIntegration, WaitersAreServedInArrivalOrder) {
  auto c = config();
  c.min_size = 1;
  c.max_size = 1;
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  auto held = pool.acquire();
  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 10; ++i) {
    threads.emplace_back([&, i] {
      auto connection = pool.acquire();
      select_one(connection);
      std::lock_guard lock(order_mutex);
      order.push_back(i);
    });
    ASSERT_TRUE(
        eventually([&] { return pool.get_statistics().waiting_requests == std::size_t(i + 1); }));
  }
  held.release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(PoolIntegration, TerminatedBackendIsReplacedNotHandedOut) {
  auto c = config();
  c.min_size = 2;
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  std::vector<int> pids;
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    pids = {a->backendpid(), b->backendpid()};
  }
  {
    pqxx::connection killer(shared_database_url());
    pqxx::nontransaction tx(killer);
    for (int pid : pids) tx.exec("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
  }
  // Give the server time to close the sockets, as a real kill would have.
  ASSERT_TRUE(eventually([&] {
    pqxx::connection probe(shared_database_url());
    pqxx::nontransaction tx(probe);
    return tx.exec("SELECT count(*) FROM pg_stat_activity WHERE pid IN (" +
                   std::to_string(pids[0]) + "," + std::to_string(pids[1]) + ")")[0][0]
               .as<int>() == 0;
  }));
  for (int i = 0; i < 5; ++i) {
    auto connection = pool.acquire();
    EXPECT_NO_THROW(EXPECT_EQ(select_one(connection), 1));
    EXPECT_EQ(std::count(pids.begin(), pids.end(), connection->backendpid()), 0);
  }
  EXPECT_EQ(pool.get_statistics().closed(CloseReason::kBroken), 2u);
}

TEST(PoolIntegration, ConnectionLeftInsideATransactionIsDiscarded) {
  Pool pool(config());
  ASSERT_TRUE(pool.wait_until_ready());
  int pid = 0;
  {
    auto connection = pool.acquire();
    pid = connection->backendpid();
    pqxx::nontransaction tx(*connection);
    tx.exec("BEGIN");
  }
  const auto s = pool.get_statistics();
  EXPECT_EQ(s.error_count(ErrorType::kTransactionLeftOpen), 1u);
  for (int i = 0; i < 5; ++i) EXPECT_NE(pool.acquire()->backendpid(), pid);
}

TEST(PoolIntegration, BrokenConnectionFromAFailedQueryIsReplaced) {
  Pool pool(config());
  ASSERT_TRUE(pool.wait_until_ready());
  {
    auto connection = pool.acquire();
    pqxx::nontransaction tx(*connection);
    EXPECT_THROW(tx.exec("SELECT pg_terminate_backend(pg_backend_pid())"), pqxx::broken_connection);
  }
  EXPECT_EQ(pool.get_statistics().closed(CloseReason::kBroken), 1u);
  auto connection = pool.acquire();
  EXPECT_EQ(select_one(connection), 1);
}

TEST(PoolIntegration, LeakedHandleIsReportedAndCountedWhenReturned) {
  auto c = config();
  c.leak_detection_timeout = 300ms;
  Pool pool(c);
  ASSERT_TRUE(pool.wait_until_ready());
  auto leaked = pool.acquire();
  ASSERT_TRUE(eventually([&] { return pool.get_statistics().leaks_detected == 1; }));
  EXPECT_EQ(pool.get_statistics().leaked_connections, 1u);
  leaked.release();
  EXPECT_EQ(pool.get_statistics().leaks_returned, 1u);
}

TEST(PoolIntegration, ShutdownWaitsForActiveQueriesThenTerminates) {
  Pool pool(config());
  ASSERT_TRUE(pool.wait_until_ready());
  std::atomic<bool> query_finished{false};
  std::atomic<bool> started{false};
  std::thread worker([&] {
    auto connection = pool.acquire();
    started = true;
    pqxx::nontransaction tx(*connection);
    tx.exec("SELECT pg_sleep(0.5)");
    query_finished = true;
  });
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  pool.shutdown();
  EXPECT_TRUE(query_finished.load());  // shutdown returned only after the query
  worker.join();
  EXPECT_EQ(pool.state(), PoolState::kTerminated);
  EXPECT_THROW(pool.acquire(), PoolClosed);
  EXPECT_EQ(pool.get_statistics().total_connections, 0u);
}

TEST(PoolIntegration, WrongPasswordIsReportedAsAnAuthenticationFailureWithoutThePassword) {
  auto c = config();
  const std::string url = shared_database_url();
  const auto at = url.find('@');
  const auto colon = url.rfind(':', at);
  c.database_url = url.substr(0, colon + 1) + "not-the-password-xyzzy" + url.substr(at);
  c.init_timeout = 500ms;
  ::testing::internal::CaptureStderr();
  std::string log;
  {
    Pool pool(c);
    EXPECT_FALSE(pool.wait_until_ready());
    ASSERT_TRUE(eventually([&] { return pool.get_statistics().connection_failures >= 1; }));
    const auto s = pool.get_statistics();
    ASSERT_TRUE(s.last_error.has_value());
    EXPECT_EQ(s.last_error->find("xyzzy"), std::string::npos) << *s.last_error;
    EXPECT_NE(s.last_error->find("Database authentication failed"), std::string::npos)
        << *s.last_error;
    EXPECT_EQ(s.last_error->find("refused"), std::string::npos) << *s.last_error;
    EXPECT_FALSE(can_serve(s));
    pool.shutdown();
    log = ::testing::internal::GetCapturedStderr();
  }
  EXPECT_NE(log.find("Database authentication failed"), std::string::npos) << log;
  EXPECT_NE(log.find("check the user and password in DATABASE_URL"), std::string::npos) << log;
  // Never connected: nothing was "lost", and the pool never "initialized".
  EXPECT_EQ(log.find("Database connection lost"), std::string::npos) << log;
  EXPECT_EQ(log.find("Connection pool initialized"), std::string::npos) << log;
  EXPECT_NE(log.find("Connection pool starting"), std::string::npos) << log;
  EXPECT_NE(log.find("Reconnection attempt 1 ("), std::string::npos) << log;
  EXPECT_EQ(log.find("xyzzy"), std::string::npos) << log;
}

TEST(PoolIntegration, InitializedIsLoggedAfterTheFirstConnections) {
  ::testing::internal::CaptureStderr();
  std::string log;
  {
    Pool pool(config());
    ASSERT_TRUE(pool.wait_until_ready());
    pool.shutdown();
    log = ::testing::internal::GetCapturedStderr();
  }
  const auto starting = log.find("Connection pool starting");
  const auto initialized = log.find("Connection pool initialized: created 2 initial connections");
  ASSERT_NE(starting, std::string::npos) << log;
  ASSERT_NE(initialized, std::string::npos) << log;
  EXPECT_LT(starting, initialized);
}

// A loopback port with nothing listening on it.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

TEST(PoolIntegration, TimeoutAgainstAnUnreachableDatabaseNamesTheConnectionError) {
  PoolConfig c;
  c.database_url = "postgresql://app:secret@127.0.0.1:" + std::to_string(closed_port()) + "/app";
  c.min_size = 1;
  c.max_size = 2;
  c.reconnect_backoff = {100ms};
  ::testing::internal::CaptureStderr();
  std::string log;
  {
    Pool pool(c);
    ASSERT_TRUE(eventually([&] { return pool.get_statistics().connection_failures >= 2; }));
    try {
      pool.acquire(300ms);
      ADD_FAILURE() << "acquire() returned a connection from an unreachable database";
    } catch (const AcquireTimeout& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("Connection refused"), std::string::npos) << message;
      EXPECT_NE(message.find("DATABASE_URL"), std::string::npos) << message;
      EXPECT_EQ(message.find("POOL_MAX_SIZE"), std::string::npos) << message;
      EXPECT_EQ(message.find("secret"), std::string::npos) << message;
    }
    const auto s = pool.get_statistics();
    ASSERT_TRUE(s.last_error.has_value());
    // While callers time out, the cause stays the last error.
    EXPECT_NE(s.last_error->find("Connection refused"), std::string::npos) << *s.last_error;
    EXPECT_GE(s.acquire_timeouts, 1u);
    pool.shutdown();
    log = ::testing::internal::GetCapturedStderr();
  }
  // Retries go on until the database is back: no "N/M" limit in the log.
  EXPECT_NE(log.find("Reconnection attempt 2 ("), std::string::npos) << log;
  EXPECT_EQ(log.find("Reconnection attempt 1/"), std::string::npos) << log;
}

}  // namespace
}  // namespace poolscope
