// A hung server: every PostgreSQL process stopped with SIGSTOP (the TCP port
// still accepts, nothing answers), then resumed with SIGCONT.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <future>
#include <iostream>

#include "chaos_support.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {
namespace {

const std::string kApplication = "chaos_hung";

PoolConfig hung_config(const std::string& url) {
  PoolConfig config;
  config.database_url = with_parameter(url, "application_name=" + kApplication);
  config.name = kApplication;
  config.min_size = 2;
  config.max_size = 4;
  config.init_timeout = 2s;     // libpq connect_timeout=2 and the validation deadline
  config.command_timeout = 1s;  // statement_timeout
  config.acquire_timeout = 2s;
  config.reconnect_backoff = {100ms, 200ms, 400ms};
  config.health_check_interval = 200ms;
  config.health_window = 1s;
  config.shutdown_timeout = 5s;
  return config;
}

// Unfreezes the server however the test ends, so the cluster can be destroyed.
struct Thaw {
  TempCluster& cluster;
  bool frozen = false;
  void freeze() {
    cluster.freeze();
    frozen = true;
  }
  void thaw() {
    if (frozen) cluster.thaw();
    frozen = false;
  }
  ~Thaw() {
    try {
      thaw();
    } catch (...) {
    }
  }
};

class HungServer : public ::testing::Test {
 protected:
  void SetUp() override { logs_ = &LogCapture::install(); }
  LogCapture* logs_ = nullptr;
  TempCluster cluster_;
};

TEST_F(HungServer, TimeoutsFireWhileFrozenAndPoolRecoversAfterwards) {
  Pool pool(hung_config(cluster_.url()));
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }));

  // POOL_COMMAND_TIMEOUT is the server's statement_timeout: a long statement
  // is cancelled, and the connection stays usable.
  {
    auto connection = pool.acquire();
    std::string sqlstate;
    try {
      pqxx::nontransaction transaction(*connection);
      transaction.exec("SELECT pg_sleep(30)");
    } catch (const pqxx::sql_error& error) {
      sqlstate = error.sqlstate();
    }
    EXPECT_EQ(sqlstate, "57014") << "statement_timeout did not cancel the statement";
    pqxx::nontransaction transaction(*connection);
    EXPECT_EQ(transaction.exec("SELECT 1")[0][0].as<int>(), 1);
  }
  Thaw server{cluster_};

  // A statement that is running when the server freezes: the client cannot
  // time it out (libpq has no client-side statement timeout), but the
  // server's statement_timeout cancels it once the server runs again.
  std::promise<std::string> long_query_outcome;
  std::thread long_query([&] {
    try {
      auto connection = pool.acquire();
      pqxx::nontransaction transaction(*connection);
      transaction.exec("SELECT pg_sleep(30)");
      long_query_outcome.set_value("finished");
    } catch (const pqxx::sql_error& error) {
      long_query_outcome.set_value("sql_error " + error.sqlstate());
    } catch (const std::exception& error) {
      long_query_outcome.set_value(std::string("other: ") + error.what());
    }
  });
  ASSERT_TRUE(eventually([&] { return pool.get_statistics().active_connections == 1; }));

  const PoolStatistics before = pool.get_statistics();
  const auto frozen_at = std::chrono::steady_clock::now();
  server.freeze();

  // Background validation of the idle connection hits its client-side
  // deadline; the connections go, and opening new ones hits connect_timeout.
  ASSERT_TRUE(eventually(
      [&] {
        const auto stats = pool.get_statistics();
        return stats.error_count(ErrorType::kValidationFailed) >
                   before.error_count(ErrorType::kValidationFailed) &&
               stats.connection_failures > before.connection_failures;
      },
      30s))
      << "validation and connect must time out against a frozen server; last_error: "
      << pool.get_statistics().last_error.value_or("");
  const double timeouts_after = seconds_since(frozen_at);
  const PoolStatistics frozen = pool.get_statistics();
  const std::string validation_line = [&] {
    for (const auto& line : logs_->lines()) {
      if (line.find("Connection validation failed") != std::string::npos) return line;
    }
    return std::string();
  }();
  EXPECT_NE(validation_line.find("no answer within"), std::string::npos) << validation_line;
  std::string connect_error;
  for (const auto& line : logs_->lines()) {
    if (line.find("Opening a connection failed") != std::string::npos ||
        line.find("Database connection lost") != std::string::npos) {
      connect_error = line;
    }
  }
  EXPECT_NE(connect_error.find("timeout"), std::string::npos) << connect_error;

  // Borrowing while frozen ends with a typed error, not a hang.
  std::string acquire_outcome;
  const auto acquire_started = std::chrono::steady_clock::now();
  try {
    auto connection = pool.acquire();
    acquire_outcome = "got a connection";
  } catch (const AcquireTimeout&) {
    acquire_outcome = "AcquireTimeout";
  }
  const double acquire_took = seconds_since(acquire_started);
  EXPECT_EQ(acquire_outcome, "AcquireTimeout");

  server.thaw();
  const auto thawed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return can_serve(pool.get_statistics()); }, 30s))
      << to_string(pool.state());
  const double serving_after = seconds_since(thawed_at);
  const std::string long_query_result = long_query_outcome.get_future().get();
  long_query.join();
  EXPECT_EQ(long_query_result, "sql_error 57014")
      << "statement_timeout must cancel the statement that the freeze interrupted";
  {
    auto connection = pool.acquire();
    pqxx::nontransaction transaction(*connection);
    EXPECT_EQ(transaction.exec("SELECT 1")[0][0].as<int>(), 1);
  }
  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }, 30s))
      << to_string(pool.state());
  const double healthy_after = seconds_since(thawed_at);
  const PoolStatistics end = pool.get_statistics();

  std::cout << fmt::format(
                   "[hung] frozen: validation and connect timed out {:.2f}s after SIGSTOP "
                   "(validation failures {}, connection failures {}); acquire() while frozen: "
                   "{} after {:.2f}s; after SIGCONT: serving in {:.2f}s, HEALTHY in {:.2f}s; "
                   "interrupted statement: {}",
                   timeouts_after, frozen.error_count(ErrorType::kValidationFailed),
                   frozen.connection_failures, acquire_outcome, acquire_took, serving_after,
                   healthy_after, long_query_result)
            << std::endl;
  EXPECT_EQ(end.total_acquisitions, end.total_releases);
  EXPECT_EQ(end.active_connections, 0u);

  auto leaks = find_secret_in_logs_and_scrape(cluster_.password(), *logs_, scraper);
  if (frozen.last_error) {
    for (const auto& found : find_secret(cluster_.password(), "last_error", {*frozen.last_error})) {
      leaks.push_back(found);
    }
  }
  EXPECT_TRUE(leaks.empty()) << fmt::format("{}", fmt::join(leaks, "\n"));
}

// Every idle connection has been idle past validation_idle_threshold, so each
// would be validated before hand-out; against a frozen server each check
// waits for its deadline. acquire() must still give up near its own timeout
// instead of validating one connection after the other.
TEST_F(HungServer, AcquireGivesUpNearItsTimeoutWhenIdleConnectionsCannotBeValidated) {
  PoolConfig config = hung_config(cluster_.url());
  config.min_size = 6;
  config.max_size = 6;
  config.acquire_timeout = 1s;
  config.health_check_interval = 1h;  // leave the idle connections to acquire()
  Pool pool(config);
  ASSERT_TRUE(pool.wait_until_ready());
  std::this_thread::sleep_for(config.validation_idle_threshold + 200ms);
  Thaw server{cluster_};
  server.freeze();

  const auto started = std::chrono::steady_clock::now();
  std::string outcome;
  try {
    auto connection = pool.acquire();
    outcome = "got a connection";
  } catch (const AcquireTimeout&) {
    outcome = "AcquireTimeout";
  }
  const double took = seconds_since(started);
  server.thaw();
  const PoolStatistics stats = pool.get_statistics();
  std::cout << fmt::format(
                   "[hung] acquire(timeout 1s) with 6 stale idle connections and a frozen "
                   "server: {} after {:.2f}s ({} validations failed)",
                   outcome, took, stats.error_count(ErrorType::kValidationFailed))
            << std::endl;
  EXPECT_EQ(outcome, "AcquireTimeout");
  // One validation deadline (2 s) may be in progress when the timeout comes;
  // six in a row (12 s) is a hang. Generous margin: this catches the hang.
  EXPECT_LT(took, 1.0 + 2.0 + 3.0) << "acquire() validated stale connections one after the other";
}

}  // namespace
}  // namespace poolscope::chaos
