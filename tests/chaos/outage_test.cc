// The database is killed (pg_ctl stop -m immediate) and started again, five
// times, while 100 threads hammer a pool of 10.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <iostream>

#include "chaos_support.h"
#include "load_generator.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {
namespace {

constexpr int kCycles = 5;
constexpr std::size_t kWorkers = 100;

PoolConfig outage_config(const std::string& url) {
  PoolConfig config;
  config.database_url = with_parameter(url, "application_name=chaos_outage");
  config.name = "chaos_outage";
  config.min_size = 2;
  config.max_size = 10;
  config.acquire_timeout = 3s;
  config.init_timeout = 2s;
  config.command_timeout = 5s;
  config.reconnect_backoff = {100ms, 200ms, 400ms};
  config.health_check_interval = 200ms;
  config.health_window = 1s;
  config.leak_detection_timeout = 10s;
  config.shutdown_timeout = 5s;
  return config;
}

std::size_t server_side_connections(TempCluster& cluster) {
  return std::stoul(cluster.psql(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chaos_outage'"));
}

TEST(DatabaseOutage, PoolSurvivesRepeatedImmediateShutdownsUnderLoad) {
  LogCapture& logs = LogCapture::install();
  TempCluster cluster;
  Pool pool(outage_config(cluster.url()));
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready()) << pool.get_statistics().last_error.value_or("");

  // A short sleep keeps statements in flight when the server dies.
  LoadGenerator load(pool, kWorkers, "SELECT pg_sleep(0.005)");
  std::vector<std::string> seen_texts;
  int cycles_survived = 0;

  for (int cycle = 1; cycle <= kCycles; ++cycle) {
    const std::uint64_t served_before = load.served();
    ASSERT_TRUE(eventually([&] { return load.served() >= served_before + 200; }))
        << "cycle " << cycle << ": no load flowing before the outage\n"
        << describe(load.totals());

    const auto stop_started = std::chrono::steady_clock::now();
    cluster.stop_immediate();
    const double stop_took = seconds_since(stop_started);
    // Detected: every connection is gone and reconnecting fails.
    ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kRecovering; }, 30s))
        << "cycle " << cycle << ": pool never noticed the outage, state "
        << to_string(pool.state());
    const double detected_after = seconds_since(stop_started);
    const PoolStatistics down = pool.get_statistics();
    EXPECT_EQ(down.total_connections, 0u);
    EXPECT_FALSE(can_serve(down));
    seen_texts.push_back(scraper.text());
    if (down.last_error) seen_texts.push_back(*down.last_error);

    const auto start_started = std::chrono::steady_clock::now();
    cluster.start();
    const double start_took = seconds_since(start_started);
    ASSERT_TRUE(eventually([&] { return can_serve(pool.get_statistics()); }, 30s))
        << "cycle " << cycle << ": pool did not come back, state " << to_string(pool.state());
    const double serving_after = seconds_since(start_started);
    const std::uint64_t served_at_recovery = load.served();
    ASSERT_TRUE(eventually([&] { return load.served() >= served_at_recovery + 100; }, 30s))
        << "cycle " << cycle << ": requests are not served after the restart\n"
        << describe(load.totals());

    // Under full load the pool is (rightly) not "healthy": all 10 connections
    // are busy. Without load it must be.
    ASSERT_TRUE(load.pause()) << "cycle " << cycle << ": workers did not finish their requests";
    ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }, 30s))
        << "cycle " << cycle << ": pool stuck in " << to_string(pool.state());
    const double healthy_after = seconds_since(start_started);
    const PoolStatistics idle = pool.get_statistics();
    EXPECT_EQ(idle.active_connections, 0u);
    EXPECT_EQ(idle.total_acquisitions, idle.total_releases);
    EXPECT_EQ(idle.total_connections, idle.idle_connections);
    load.resume();
    ++cycles_survived;

    std::cout << fmt::format(
                     "[outage] cycle {}: pg_ctl stop took {:.2f}s; pool detected the outage "
                     "(RECOVERING, 0 connections) {:.2f}s after stop began; server start took "
                     "{:.2f}s; pool serving {:.2f}s and HEALTHY (load paused) {:.2f}s after "
                     "start began; served so far {}",
                     cycle, stop_took, detected_after, start_took, serving_after, healthy_after,
                     load.served())
              << std::endl;
  }

  const std::uint64_t served_before_end = load.served();
  ASSERT_TRUE(eventually([&] { return load.served() >= served_before_end + 200; }));
  stop_or_exit(load, cluster, 60s);
  const LoadTotals totals = load.totals();
  std::cout << "[outage] " << kCycles << " cycles, " << kWorkers
            << " workers, pool of 10: " << describe(totals) << std::endl;

  EXPECT_EQ(cycles_survived, kCycles);
  EXPECT_EQ(totals.unexpected, 0u) << "every failure must be a typed error";
  EXPECT_EQ(totals.dead_connection_reused, 0u)
      << "a connection that failed with broken_connection was handed out again";
  // "No hang past the acquire timeout": generous margin, this catches hangs,
  // not slowness.
  EXPECT_LT(totals.longest_acquire_seconds, 3.0 + 10.0);
  EXPECT_GT(totals.ok, 0u);

  ASSERT_TRUE(eventually([&] { return pool.state() == PoolState::kHealthy; }, 30s))
      << to_string(pool.state());
  const PoolStatistics end = pool.get_statistics();
  std::uint64_t closed = 0;
  for (const auto count : end.connections_closed) closed += count;
  std::cout << fmt::format(
                   "[outage] pool: acquisitions={} releases={} active={} total={} created={} "
                   "closed={} (broken={}, validation={}) connection_failures={} "
                   "reconnect_attempts={} acquire_timeouts={} leaks_detected={}",
                   end.total_acquisitions, end.total_releases, end.active_connections,
                   end.total_connections, end.connections_created, closed,
                   end.closed(CloseReason::kBroken), end.closed(CloseReason::kValidation),
                   end.connection_failures, end.reconnect_attempts, end.acquire_timeouts,
                   end.leaks_detected)
            << std::endl;
  EXPECT_EQ(end.total_acquisitions, end.total_releases);
  EXPECT_EQ(end.active_connections, 0u);
  EXPECT_EQ(end.waiting_requests, 0u);
  EXPECT_EQ(end.leaked_connections, 0u);
  EXPECT_EQ(end.leaks_detected, 0u);
  EXPECT_EQ(end.total_acquisitions,
            totals.requests() - totals.acquire_timeouts - totals.pool_closed)
      << "every successful acquire() is one acquisition";
  EXPECT_EQ(end.acquire_timeouts, totals.acquire_timeouts);
  EXPECT_EQ(end.connections_created - closed, end.total_connections)
      << "every connection opened is either open or was closed with a reason";
  EXPECT_GE(end.connection_failures, static_cast<std::uint64_t>(kCycles));
  // No connection leaked on the server either.
  EXPECT_TRUE(eventually([&] { return server_side_connections(cluster) == end.total_connections; }))
      << "server has " << server_side_connections(cluster) << " backends, pool has "
      << end.total_connections;

  seen_texts.push_back(scraper.text());
  pool.shutdown();
  EXPECT_EQ(pool.state(), PoolState::kTerminated);
  EXPECT_TRUE(eventually([&] { return server_side_connections(cluster) == 0; }));

  std::vector<std::string> leaks = find_secret(cluster.password(), "log", logs.lines());
  for (const auto& found : find_secret(cluster.password(), "exposed", seen_texts))
    leaks.push_back(found);
  for (const auto& [kind, message] : totals.samples) {
    for (const auto& found : find_secret(cluster.password(), "error " + kind, {message})) {
      leaks.push_back(found);
    }
  }
  EXPECT_TRUE(leaks.empty()) << "password found:\n" << fmt::format("{}", fmt::join(leaks, "\n"));
  std::cout << "[outage] checked " << logs.lines().size() << " log lines, " << seen_texts.size()
            << " scrapes/errors and " << totals.samples.size()
            << " caller-visible error messages for the password: "
            << (leaks.empty() ? "not found" : "FOUND") << std::endl;
}

}  // namespace
}  // namespace poolscope::chaos
