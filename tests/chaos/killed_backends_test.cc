// Backends killed with pg_terminate_backend: the pool must notice and replace
// them, never hand a dead one to a caller as a good connection.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>

#include "chaos_support.h"
#include "load_generator.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {
namespace {

constexpr std::size_t kPoolSize = 4;
constexpr int kRounds = 5;
const std::string kApplication = "chaos_killed";

PoolConfig killed_config(const std::string& url) {
  PoolConfig config;
  config.database_url = with_parameter(url, "application_name=" + kApplication);
  config.name = kApplication;
  config.min_size = kPoolSize;
  config.max_size = kPoolSize;
  config.acquire_timeout = 5s;
  config.command_timeout = 5s;
  config.reconnect_backoff = {100ms, 200ms, 400ms};
  config.health_window = 1s;
  config.shutdown_timeout = 5s;
  // No background validation: what is tested is the hand-out path alone.
  config.health_check_interval = 1h;
  return config;
}

std::size_t backends(TempCluster& cluster) {
  return std::stoul(cluster.psql(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + kApplication + "'"));
}

std::size_t kill_backends(TempCluster& cluster) {
  const std::string killed = cluster.psql(
      "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE application_name = '" +
      kApplication + "') AS killed");
  return std::stoul(killed);
}

// True once the process has exited (gone, or a zombie not yet reaped): its
// sockets are closed, so the server's end of stream has been sent.
bool process_exited(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close_paren = line.rfind(')');
  return close_paren == std::string::npos || close_paren + 2 >= line.size() ||
         line[close_paren + 2] == 'Z' || line[close_paren + 2] == 'X';
}

int backend_pid(PooledConnection& connection) {
  pqxx::nontransaction transaction(*connection);
  return transaction.exec("SELECT pg_backend_pid()")[0][0].as<int>();
}

struct IdleKillResult {
  std::size_t killed = 0;
  std::size_t handed_out = 0;
  std::size_t first_statement_failed = 0;
  std::vector<std::string> failures;
};

// Kills every backend while all connections sit idle in the pool, waits until
// the server has really dropped them, then borrows every connection at once
// and runs SELECT 1 on each: with no race possible, every one must work.
IdleKillResult kill_idle_connections_and_borrow_all(Pool& pool, TempCluster& cluster,
                                                    std::chrono::milliseconds settle) {
  IdleKillResult result;
  for (int round = 1; round <= kRounds; ++round) {
    std::vector<int> pids;
    {
      std::vector<PooledConnection> warm;
      for (std::size_t i = 0; i < kPoolSize; ++i) warm.push_back(pool.acquire());
      for (auto& connection : warm) pids.push_back(backend_pid(connection));
    }
    EXPECT_TRUE(eventually([&] { return pool.get_statistics().idle_connections == kPoolSize; }));
    result.killed += kill_backends(cluster);
    // Wait for the processes to exit, not only to leave pg_stat_activity
    // (which happens before the FATAL message's end of stream is sent):
    // only then is the kill complete and no race with the acquisition left.
    EXPECT_TRUE(eventually([&] {
      return std::all_of(pids.begin(), pids.end(), process_exited) && backends(cluster) == 0;
    })) << "round "
        << round << ": backends did not exit";
    std::this_thread::sleep_for(settle);

    std::vector<PooledConnection> borrowed;
    for (std::size_t i = 0; i < kPoolSize; ++i) {
      borrowed.push_back(pool.acquire());
      ++result.handed_out;
      try {
        pqxx::nontransaction transaction(*borrowed.back());
        transaction.exec("SELECT 1");
      } catch (const std::exception& error) {
        ++result.first_statement_failed;
        result.failures.push_back(fmt::format("round {} conn_{}: {}", round, borrowed.back().id(),
                                              trimmed(error.what())));
      }
    }
  }
  return result;
}

class KilledBackends : public ::testing::Test {
 protected:
  void SetUp() override { logs_ = &LogCapture::install(); }
  void check_no_secret(const Scraper& scraper) {
    const auto leaks = find_secret_in_logs_and_scrape(cluster_.password(), *logs_, scraper);
    EXPECT_TRUE(leaks.empty()) << fmt::format("{}", fmt::join(leaks, "\n"));
  }

  LogCapture* logs_ = nullptr;
  TempCluster cluster_;
};

// Connections used moments ago are not validated with a round trip before
// hand-out; the pool must still see that the server closed them.
TEST_F(KilledBackends, RecentlyUsedIdleConnectionsKilledAreNeverHandedOut) {
  PoolConfig config = killed_config(cluster_.url());
  config.validation_idle_threshold = 1h;  // never SELECT 1 before hand-out
  Pool pool(config);
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());

  const IdleKillResult result = kill_idle_connections_and_borrow_all(pool, cluster_, 0ms);
  const PoolStatistics stats = pool.get_statistics();
  std::cout << fmt::format(
                   "[killed/probe] {} rounds: killed {} idle backends, handed out {} "
                   "connections, first statement failed on {}; pool closed {} as broken, "
                   "created {}",
                   kRounds, result.killed, result.handed_out, result.first_statement_failed,
                   stats.closed(CloseReason::kBroken), stats.connections_created)
            << std::endl;
  EXPECT_EQ(result.killed, kRounds * kPoolSize);
  EXPECT_EQ(result.first_statement_failed, 0u)
      << "dead connections handed out:\n"
      << fmt::format("{}", fmt::join(result.failures, "\n"));
  EXPECT_EQ(stats.total_acquisitions, stats.total_releases);
  check_no_secret(scraper);
}

// Connections idle past validation_idle_threshold get a SELECT 1 first.
TEST_F(KilledBackends, LongIdleConnectionsKilledAreNeverHandedOut) {
  PoolConfig config = killed_config(cluster_.url());
  config.validation_idle_threshold = 0ms;  // always SELECT 1 before hand-out
  Pool pool(config);
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());

  const IdleKillResult result = kill_idle_connections_and_borrow_all(pool, cluster_, 5ms);
  const PoolStatistics stats = pool.get_statistics();
  std::cout << fmt::format(
                   "[killed/validate] {} rounds: killed {} idle backends, handed out {} "
                   "connections, first statement failed on {}; validation failures {}, created {}",
                   kRounds, result.killed, result.handed_out, result.first_statement_failed,
                   stats.error_count(ErrorType::kValidationFailed), stats.connections_created)
            << std::endl;
  EXPECT_EQ(result.killed, kRounds * kPoolSize);
  EXPECT_EQ(result.first_statement_failed, 0u)
      << "dead connections handed out:\n"
      << fmt::format("{}", fmt::join(result.failures, "\n"));
  EXPECT_GE(stats.error_count(ErrorType::kValidationFailed), result.killed);
  EXPECT_EQ(stats.total_acquisitions, stats.total_releases);
  check_no_secret(scraper);
}

// Kills while 20 workers run statements: a statement may fail when the kill
// races with it (that is the caller's error to see), but the pool discards
// that connection, keeps serving, and its books balance.
TEST_F(KilledBackends, KillsDuringLoadAreReplacedAndBooksBalance) {
  PoolConfig config = killed_config(cluster_.url());
  config.min_size = 2;
  config.max_size = 5;
  config.health_check_interval = 200ms;
  Pool pool(config);
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());

  LoadGenerator load(pool, 20, "SELECT pg_sleep(0.002)");
  std::size_t killed = 0;
  for (int round = 1; round <= 10; ++round) {
    const std::uint64_t served = load.served();
    ASSERT_TRUE(eventually([&] { return load.served() >= served + 100; }))
        << "round " << round << ": pool stopped serving\n"
        << describe(load.totals());
    killed += kill_backends(cluster_);
  }
  const std::uint64_t served = load.served();
  ASSERT_TRUE(eventually([&] { return load.served() >= served + 100; }));
  stop_or_exit(load, cluster_, 60s);
  const LoadTotals totals = load.totals();
  const PoolStatistics stats = pool.get_statistics();
  std::uint64_t closed = 0;
  for (const auto count : stats.connections_closed) closed += count;
  std::cout << "[killed/load] 10 rounds, " << killed
            << " backends killed mid-load: " << describe(totals) << std::endl;
  std::cout << fmt::format(
                   "[killed/load] pool: acquisitions={} releases={} created={} closed={} "
                   "(broken={}, validation={}) total={}",
                   stats.total_acquisitions, stats.total_releases, stats.connections_created,
                   closed, stats.closed(CloseReason::kBroken),
                   stats.closed(CloseReason::kValidation), stats.total_connections)
            << std::endl;
  EXPECT_GT(killed, 0u);
  EXPECT_EQ(totals.unexpected, 0u);
  EXPECT_EQ(totals.dead_connection_reused, 0u);
  EXPECT_EQ(stats.total_acquisitions, stats.total_releases);
  EXPECT_EQ(stats.active_connections, 0u);
  EXPECT_EQ(stats.connections_created - closed, stats.total_connections);
  EXPECT_TRUE(
      eventually([&] { return backends(cluster_) == pool.get_statistics().total_connections; }));
  check_no_secret(scraper);
}

}  // namespace
}  // namespace poolscope::chaos
