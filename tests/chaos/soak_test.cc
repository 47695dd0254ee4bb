// Soak: a million acquire/release cycles with exceptions thrown while a
// connection is held, broken connections and transactions left open; then
// a smaller run of the same against a real PostgreSQL. Zero leaks, and the
// pool's books agree with what the callers did.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <iostream>

#include "chaos_support.h"
#include "load_generator.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {
namespace {

using poolscope::testing::FakeConnection;
using poolscope::testing::FakeFactory;
using poolscope::testing::FakeServer;

std::uint64_t closed_total(const PoolStatistics& stats) {
  std::uint64_t closed = 0;
  for (const auto count : stats.connections_closed) closed += count;
  return closed;
}

TEST(Soak, MillionCyclesWithRandomExceptionsLeakNothing) {
  constexpr std::uint64_t kCycles = 1'000'000;
  constexpr std::size_t kThreads = 6;
  LogCapture& logs = LogCapture::install(LogLevel::kWarning);
  auto server = std::make_shared<FakeServer>();
  PoolConfig config;
  config.name = "chaos_soak";
  config.min_size = 1;
  config.max_size = 4;
  config.acquire_timeout = 30s;
  config.reconnect_backoff = {1ms};
  Pool pool(config, std::make_shared<FakeFactory>(server), Clock::system());
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());

  std::atomic<std::uint64_t> next_cycle{0};
  std::atomic<std::uint64_t> acquired{0}, thrown{0}, broken{0}, left_in_transaction{0},
      marked_broken{0}, released_early{0}, moved{0}, typed_errors{0}, other_errors{0};
  auto worker = [&](std::uint64_t seed) {
    std::mt19937_64 random(seed);
    std::uniform_int_distribution<int> percent(0, 999);
    while (next_cycle.fetch_add(1) < kCycles) {
      try {
        PooledConnection connection = pool.acquire();
        ++acquired;
        const int roll = percent(random);
        if (roll < 100) {
          ++thrown;
          throw InjectedFault();
        } else if (roll < 110) {
          ++broken;
          dynamic_cast<FakeConnection&>(connection.connection()).break_it();
          throw InjectedFault();
        } else if (roll < 120) {
          ++left_in_transaction;
          dynamic_cast<FakeConnection&>(connection.connection()).begin_transaction();
        } else if (roll < 125) {
          ++marked_broken;
          connection.mark_broken();
          throw InjectedFault();
        } else if (roll < 175) {
          ++released_early;
          connection.release();
          connection.release();  // idempotent
        } else if (roll < 225) {
          ++moved;
          PooledConnection elsewhere = std::move(connection);
          if (roll < 200) throw InjectedFault();
        }
      } catch (const InjectedFault&) {
      } catch (const Error&) {
        ++typed_errors;
      } catch (...) {
        ++other_errors;
      }
    }
  };
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < kThreads; ++i) threads.emplace_back(worker, 1000 + i);
  for (auto& thread : threads) thread.join();
  const double took = seconds_since(started);

  const PoolStatistics stats = pool.get_statistics();
  std::cout << fmt::format(
                   "[soak/fake] {} cycles on {} threads, pool of 4, in {:.1f}s: acquired {}, "
                   "exceptions thrown while holding {}, broken {}, left in a transaction {}, "
                   "marked broken {}, released early {}, moved {}, typed errors {}, other errors "
                   "{}",
                   kCycles, kThreads, took, acquired.load(),
                   thrown.load() + broken.load() + marked_broken.load(), broken.load(),
                   left_in_transaction.load(), marked_broken.load(), released_early.load(),
                   moved.load(), typed_errors.load(), other_errors.load())
            << std::endl;
  std::cout << fmt::format(
                   "[soak/fake] pool: acquisitions={} releases={} active={} idle={} total={} "
                   "created={} closed={} broken={} transaction_left_open={} leaks_detected={}; "
                   "fake server: opened {} closed {}",
                   stats.total_acquisitions, stats.total_releases, stats.active_connections,
                   stats.idle_connections, stats.total_connections, stats.connections_created,
                   closed_total(stats), stats.error_count(ErrorType::kConnectionBroken),
                   stats.error_count(ErrorType::kTransactionLeftOpen), stats.leaks_detected,
                   server->connects.load(), server->closed.load())
            << std::endl;

  EXPECT_EQ(acquired.load(), kCycles) << "no acquire() may fail in this soak";
  EXPECT_EQ(typed_errors.load() + other_errors.load(), 0u);
  EXPECT_EQ(stats.total_acquisitions, kCycles);
  EXPECT_EQ(stats.total_releases, kCycles);
  EXPECT_EQ(stats.active_connections, 0u);
  EXPECT_EQ(stats.waiting_requests, 0u);
  EXPECT_EQ(stats.total_connections, stats.idle_connections);
  EXPECT_EQ(stats.leaked_connections, 0u);
  EXPECT_EQ(stats.leaks_detected, 0u);
  EXPECT_EQ(stats.error_count(ErrorType::kConnectionBroken), broken.load() + marked_broken.load());
  EXPECT_EQ(stats.error_count(ErrorType::kTransactionLeftOpen), left_in_transaction.load());
  EXPECT_EQ(stats.connections_created - closed_total(stats), stats.total_connections);
  EXPECT_EQ(static_cast<std::uint64_t>(server->connects.load() - server->closed.load()),
            stats.total_connections)
      << "connection objects alive must be exactly the pool's connections";

  pool.shutdown();
  EXPECT_EQ(server->connects.load(), server->closed.load())
      << "connections left open after shutdown";
  auto lines = logs.lines();
  std::size_t leak_lines = 0;
  for (const auto& line : lines)
    leak_lines += line.find("Potential connection leak") != std::string::npos;
  EXPECT_EQ(leak_lines, 0u);
}

TEST(Soak, RealDatabaseCyclesWithFaultsLeakNothing) {
  constexpr std::uint64_t kCycles = 5'000;
  LogCapture& logs = LogCapture::install();
  TempCluster cluster;  // own cluster: the soak terminates its own backends
  PoolConfig config;
  config.database_url = with_parameter(cluster.url(), "application_name=chaos_soak");
  config.name = "chaos_soak_pg";
  config.min_size = 2;
  config.max_size = 5;
  config.acquire_timeout = 10s;
  config.reconnect_backoff = {50ms, 100ms};
  config.shutdown_timeout = 5s;
  Pool pool(config);
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());

  std::atomic<std::uint64_t> begun{0}, terminated{0};
  LoadGenerator load(pool, 12, "", [&](PooledConnection& connection, std::mt19937_64& random) {
    const int roll = static_cast<int>(random() % 1000);
    pqxx::nontransaction transaction(*connection);
    if (roll < 100) {
      transaction.exec("SELECT 1");
      throw InjectedFault();
    } else if (roll < 115) {
      ++begun;
      transaction.exec("BEGIN");  // and never COMMIT: the pool must not reuse it
      throw InjectedFault();
    } else if (roll < 165) {
      transaction.exec("SELECT 1/0");  // sql_error; the connection stays good
    } else if (roll < 170) {
      ++terminated;
      transaction.exec("SELECT pg_terminate_backend(pg_backend_pid())");
    } else {
      transaction.exec("SELECT 1");
    }
  });
  ASSERT_TRUE(eventually([&] { return load.totals().requests() >= kCycles; }, 120s))
      << describe(load.totals());
  stop_or_exit(load, cluster, 60s);
  const LoadTotals totals = load.totals();
  // Once the pool has settled (back at min_size, nothing being opened), the
  // server has exactly the pool's connections: none leaked on either side.
  auto server_side_connections = [&] {
    return std::stoul(cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chaos_soak'"));
  };
  std::size_t server_side = 0;
  EXPECT_TRUE(eventually([&] {
    const auto settled = pool.get_statistics();
    server_side = server_side_connections();
    return settled.pending_connections == 0 && settled.total_connections >= config.min_size &&
           server_side == settled.total_connections;
  }));
  const PoolStatistics stats = pool.get_statistics();
  std::cout << "[soak/pg] " << describe(totals) << std::endl;
  std::cout << fmt::format(
                   "[soak/pg] began and abandoned {} transactions, terminated {} own backends; "
                   "pool: acquisitions={} releases={} active={} total={} created={} closed={} "
                   "transaction_left_open={} broken={}; server backends {}",
                   begun.load(), terminated.load(), stats.total_acquisitions, stats.total_releases,
                   stats.active_connections, stats.total_connections, stats.connections_created,
                   closed_total(stats), stats.error_count(ErrorType::kTransactionLeftOpen),
                   stats.error_count(ErrorType::kConnectionBroken), server_side)
            << std::endl;

  EXPECT_EQ(totals.unexpected, 0u);
  EXPECT_EQ(totals.acquire_timeouts, 0u);
  EXPECT_EQ(totals.dead_connection_reused, 0u);
  EXPECT_EQ(stats.total_acquisitions, totals.requests());
  EXPECT_EQ(stats.total_releases, stats.total_acquisitions);
  EXPECT_EQ(stats.active_connections, 0u);
  EXPECT_EQ(stats.leaks_detected, 0u);
  EXPECT_EQ(stats.error_count(ErrorType::kTransactionLeftOpen), begun.load());
  EXPECT_EQ(stats.connections_created - closed_total(stats), stats.total_connections);
  EXPECT_EQ(server_side, stats.total_connections) << "server-side connections leaked";

  pool.shutdown();
  EXPECT_TRUE(eventually([&] {
    return cluster.psql(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
               "'chaos_soak'") == "0";
  }));
  const auto leaks = find_secret_in_logs_and_scrape(cluster.password(), logs, scraper);
  EXPECT_TRUE(leaks.empty()) << fmt::format("{}", fmt::join(leaks, "\n"));
}

}  // namespace
}  // namespace poolscope::chaos
