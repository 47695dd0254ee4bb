// The server has fewer connection slots than POOL_MAX_SIZE: the pool must
// count and report the failures to grow, and keep serving with what it has.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <iostream>

#include "chaos_support.h"
#include "load_generator.h"
#include "poolscope/pool.h"

namespace poolscope::chaos {
namespace {

// max_connections = 6 with the default superuser_reserved_connections = 3
// leaves 3 slots for the pool's role; the pool wants up to 8.
constexpr int kServerMaxConnections = 6;
constexpr std::size_t kUsableSlots = 3;
constexpr std::size_t kPoolMax = 8;

TEST(TooFewServerSlots, PoolReportsFailuresAndServesWithWhatItHas) {
  LogCapture& logs = LogCapture::install();
  TempCluster cluster(kServerMaxConnections);
  PoolConfig config;
  config.database_url = with_parameter(cluster.url(), "application_name=chaos_slots");
  config.name = "chaos_slots";
  config.min_size = 2;
  config.max_size = kPoolMax;
  config.acquire_timeout = 3s;
  config.reconnect_backoff = {100ms, 200ms, 400ms};
  config.health_check_interval = 200ms;
  config.shutdown_timeout = 5s;
  Pool pool(config);
  Scraper scraper(pool);
  ASSERT_TRUE(pool.wait_until_ready());

  // Enough demand for all 8 connections: each statement holds one for 20 ms.
  LoadGenerator load(pool, 12, "SELECT pg_sleep(0.02)");
  ASSERT_TRUE(eventually([&] {
    const auto stats = pool.get_statistics();
    return stats.connection_failures >= 3 && stats.error_count(ErrorType::kConnectionFailed) >= 3 &&
           stats.last_error.has_value();
  })) << "the pool never tried to grow past the server's slots";

  // Keep serving for a while, sampling what /health would say.
  std::size_t samples = 0, servable = 0, largest_pool = 0;
  const std::uint64_t served_before = load.served();
  const auto sampling_until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < sampling_until) {
    const auto stats = pool.get_statistics();
    ++samples;
    servable += can_serve(stats) ? 1 : 0;
    largest_pool = std::max(largest_pool, stats.total_connections);
    std::this_thread::sleep_for(20ms);
  }
  const std::uint64_t served_while_short = load.served() - served_before;
  stop_or_exit(load, cluster, 60s);
  const LoadTotals totals = load.totals();
  const PoolStatistics stats = pool.get_statistics();
  const std::string last_error = stats.last_error.value_or("");
  std::cout << fmt::format(
                   "[slots] server max_connections={} ({} usable), pool max {}: pool held at "
                   "most {} connections; connection_failures={} errors_total(connection_failed)={} "
                   "reconnect_attempts={}; can_serve true in {}/{} samples; {} requests served "
                   "in the 2 s sample window",
                   kServerMaxConnections, kUsableSlots, kPoolMax, largest_pool,
                   stats.connection_failures, stats.error_count(ErrorType::kConnectionFailed),
                   stats.reconnect_attempts, servable, samples, served_while_short)
            << std::endl;
  std::cout << "[slots] last_error: " << last_error << std::endl;
  std::cout << "[slots] " << describe(totals) << std::endl;

  EXPECT_LE(largest_pool, kUsableSlots);
  EXPECT_GE(largest_pool, 2u);
  EXPECT_EQ(servable, samples) << "a pool with connections can serve; /health must stay 200";
  EXPECT_GT(served_while_short, 0u);
  EXPECT_EQ(totals.unexpected, 0u);
  EXPECT_EQ(totals.broken_connection, 0u);
  EXPECT_NE(last_error.find("slots"), std::string::npos)
      << "last_error should carry the server's reason";
  EXPECT_EQ(stats.total_acquisitions, stats.total_releases);

  // The same numbers on the scrape.
  const std::string text = scraper.text();
  EXPECT_NE(text.find("error_type=\"connection_failed\""), std::string::npos);

  const auto leaks = find_secret_in_logs_and_scrape(cluster.password(), logs, scraper);
  EXPECT_TRUE(leaks.empty()) << fmt::format("{}", fmt::join(leaks, "\n"));
}

}  // namespace
}  // namespace poolscope::chaos
