#include "poolscope/pool_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <atomic>
#include <thread>

#include "fakes.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;
using testing::FakeFactory;
using testing::FakeServer;

std::string scrape(const PoolMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.Collect());
}

void expect_contains(const std::string& text, std::initializer_list<std::string> expected) {
  for (const std::string& line : expected) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
  }
}

class PoolMetricsTest : public ::testing::Test {
 protected:
  std::unique_ptr<Pool> pool(const std::string& name) {
    PoolConfig c;
    c.name = name;
    auto p = std::make_unique<Pool>(c, std::make_shared<FakeFactory>(server_), clock_);
    EXPECT_TRUE(p->wait_until_ready());
    return p;
  }
  std::shared_ptr<FakeServer> server_ = std::make_shared<FakeServer>();
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
};

TEST_F(PoolMetricsTest, PublishesTheGuidesMetricsWithAPoolLabel) {
  auto a = pool("orders");
  PoolMetrics metrics(MetricsOptions{"codebase_mcp_pool_", "1.2.3"});
  metrics.add(*a);
  { auto handle = a->acquire(); }
  {
    auto handle = a->acquire();
    handle.mark_broken();  // replaced by a connection opened while metrics are attached
  }
  // The replacement is counted under the pool lock and observed by the
  // histogram just after it: wait for the histogram.
  ASSERT_TRUE(testing::eventually([&] {
    return scrape(metrics).find(
               "codebase_mcp_pool_connection_create_duration_seconds_count{pool=\"orders\"} "
               "1") != std::string::npos;
  }));
  const std::string text = scrape(metrics);
  expect_contains(
      text, {"# TYPE codebase_mcp_pool_connections_total untyped",
             "codebase_mcp_pool_connections_total{pool=\"orders\"} 2",
             "codebase_mcp_pool_connections_closed_total{pool=\"orders\",reason=\"broken\"} 1",
             "# TYPE codebase_mcp_pool_connections_idle gauge",
             "# TYPE codebase_mcp_pool_connections_active gauge",
             "# TYPE codebase_mcp_pool_waiting_requests gauge",
             "# TYPE codebase_mcp_pool_acquisition_duration_seconds histogram",
             "codebase_mcp_pool_acquisition_duration_seconds_bucket{pool=\"orders\",le=\"0.01\"} 2",
             "codebase_mcp_pool_acquisition_duration_seconds_bucket{pool=\"orders\",le=\"0.0001\"}",
             "# TYPE codebase_mcp_pool_acquisitions_total counter",
             "codebase_mcp_pool_acquisitions_total{pool=\"orders\"} 2",
             "codebase_mcp_pool_releases_total{pool=\"orders\"} 2",
             "codebase_mcp_pool_errors_total{error_type=\"acquire_timeout\",pool=\"orders\"} 0",
             "codebase_mcp_pool_health_status{pool=\"orders\"} 1",  // degraded: a broken connection
                                                                    // is a recent error
             "codebase_mcp_pool_state{pool=\"orders\",state=\"terminated\"} 0",
             "codebase_mcp_pool_state{pool=\"orders\",state=\"recovering\"} 0",
             "codebase_mcp_pool_connections_closed_total{pool=\"orders\",reason=\"lifetime\"} 0",
             "codebase_mcp_pool_max_connections{pool=\"orders\"} 10",
             "codebase_mcp_pool_build_info{pool=\"orders\",version=\"1.2.3\"} 1",
             "codebase_mcp_pool_connection_hold_duration_seconds_count{pool=\"orders\"} 2",
             "codebase_mcp_pool_connection_create_duration_seconds_count{pool=\"orders\"} 1"});
}

TEST_F(PoolMetricsTest, SeveralPoolsShareOneFamilyPerMetric) {
  auto a = pool("a");
  auto b = pool("b");
  PoolMetrics metrics;
  metrics.add(*a);
  metrics.add(*b);
  const std::string text = scrape(metrics);
  std::size_t type_lines = 0;
  for (std::size_t at = text.find("# TYPE codebase_mcp_pool_connections_idle ");
       at != std::string::npos;
       at = text.find("# TYPE codebase_mcp_pool_connections_idle ", at + 1)) {
    ++type_lines;
  }
  EXPECT_EQ(type_lines, 1u);
  EXPECT_NE(text.find("codebase_mcp_pool_connections_idle{pool=\"a\"}"), std::string::npos);
  EXPECT_NE(text.find("codebase_mcp_pool_connections_idle{pool=\"b\"}"), std::string::npos);
}

TEST_F(PoolMetricsTest, DuplicatePoolNamesAreRejected) {
  auto a = pool("same");
  auto b = pool("same");
  PoolMetrics metrics;
  metrics.add(*a);
  EXPECT_THROW(metrics.add(*b), std::invalid_argument);
}

TEST_F(PoolMetricsTest, RemoveDetachesTheObserverSoReAddingCountsOnce) {
  auto a = pool("a");
  PoolMetrics metrics;
  // More remove/add cycles than a pool has observer slots: each remove
  // frees its slot.
  for (int i = 0; i < 12; ++i) {
    ASSERT_NO_THROW(metrics.add(*a)) << "cycle " << i;
    metrics.remove(*a);
  }
  metrics.add(*a);
  { auto handle = a->acquire(); }
  expect_contains(scrape(metrics),
                  {"codebase_mcp_pool_acquisition_duration_seconds_count{pool=\"a\"} 1\n",
                   "codebase_mcp_pool_connection_hold_duration_seconds_count{pool=\"a\"} 1\n"});
  metrics.remove(*a);
  { auto handle = a->acquire(); }  // not published: counted nowhere
  EXPECT_NE(
      scrape(metrics).find("codebase_mcp_pool_acquisition_duration_seconds_count{pool=\"a\"} 1\n"),
      std::string::npos);
}

TEST_F(PoolMetricsTest, DestroyingTheMetricsDetachesFromPoolsThatLiveOn) {
  auto a = pool("a");
  {
    PoolMetrics metrics;
    metrics.add(*a);
  }
  // The metrics object is gone; the pool must not call into it (the
  // AddressSanitizer run of this suite reports a use-after-free if it did).
  { auto handle = a->acquire(); }
  EXPECT_EQ(a->get_statistics().total_acquisitions, 1u);
}

TEST_F(PoolMetricsTest, HistogramsCountEveryCycleFromManyThreads) {
  auto a = pool("busy");
  PoolMetrics metrics(MetricsOptions{"codebase_mcp_pool_", "x", MetricsNaming::kBoth});
  metrics.add(*a);
  constexpr int kThreads = 4;
  constexpr int kCycles = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCycles; ++i) auto handle = a->acquire();
    });
  }
  for (auto& thread : threads) thread.join();
  const std::string total = std::to_string(kThreads * kCycles);
  const std::string text = scrape(metrics);
  expect_contains(
      text,
      {"codebase_mcp_pool_acquisition_duration_seconds_count{pool=\"busy\"} " + total + "\n",
       "codebase_mcp_pool_acquisition_duration_seconds_bucket{pool=\"busy\",le=\"+Inf\"} " + total +
           "\n",
       "codebase_mcp_pool_connection_hold_duration_seconds_count{pool=\"busy\"} " + total + "\n",
       "db_client_connection_wait_time_seconds_count{db_client_connection_pool_name=\"busy\"} " +
           total + "\n",
       "db_client_connection_use_time_seconds_count{db_client_connection_pool_name=\"busy\"} " +
           total + "\n"});
}

TEST_F(PoolMetricsTest, HistogramBucketsHoldExactDurations) {
  auto a = pool("timed");
  PoolMetrics metrics;
  metrics.add(*a);
  {
    auto handle = a->acquire();
    clock_->advance(std::chrono::microseconds(100));  // exactly on the 0.0001 bound
  }
  {
    auto handle = a->acquire();
    clock_->advance(std::chrono::microseconds(101));  // just above it
  }
  const std::string text = scrape(metrics);
  expect_contains(
      text,
      {"codebase_mcp_pool_connection_hold_duration_seconds_bucket{pool=\"timed\",le=\"0.0001\"} "
       "1\n",
       "codebase_mcp_pool_connection_hold_duration_seconds_bucket{pool=\"timed\",le=\"0.0005\"} "
       "2\n",
       "codebase_mcp_pool_connection_hold_duration_seconds_sum{pool=\"timed\"} 0.000201\n",
       // The fake clock does not move during an acquisition.
       "codebase_mcp_pool_acquisition_duration_seconds_bucket{pool=\"timed\",le=\"5e-05\"} 2\n"});
}

TEST_F(PoolMetricsTest, TheDeprecatedRegistryConstructorStillPublishesEverything) {
  auto a = pool("old");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  EXPECT_THROW(PoolMetrics(std::shared_ptr<prometheus::Registry>()), std::invalid_argument);
  PoolMetrics metrics(std::make_shared<prometheus::Registry>());
#pragma GCC diagnostic pop
  metrics.add(*a);
  { auto handle = a->acquire(); }
  expect_contains(scrape(metrics),
                  {"codebase_mcp_pool_acquisition_duration_seconds_count{pool=\"old\"} 1\n",
                   "codebase_mcp_pool_connections_idle{pool=\"old\"}"});
}

TEST_F(PoolMetricsTest, PrefixIsConfigurable) {
  auto a = pool("a");
  PoolMetrics metrics(MetricsOptions{"svc_db_", "x"});
  metrics.add(*a);
  const std::string text = scrape(metrics);
  EXPECT_NE(text.find("svc_db_connections_idle{pool=\"a\"}"), std::string::npos);
  EXPECT_EQ(text.find("codebase_mcp_pool_"), std::string::npos);
}

TEST_F(PoolMetricsTest, OtelNamingPublishesTheSemanticConventionNamesOnly) {
  auto a = pool("orders");
  PoolMetrics metrics(MetricsOptions{"codebase_mcp_pool_", "1.2.3", MetricsNaming::kOtel});
  metrics.add(*a);
  auto held = a->acquire();
  { auto handle = a->acquire(); }
  const std::string text = scrape(metrics);
  expect_contains(
      text,
      {"# TYPE db_client_connection_count gauge",
       "db_client_connection_count{db_client_connection_pool_name=\"orders\","
       "db_client_connection_state=\"used\"} 1",
       "db_client_connection_count{db_client_connection_pool_name=\"orders\","
       "db_client_connection_state=\"idle\"} 1",
       "# TYPE db_client_connection_max gauge",
       "db_client_connection_max{db_client_connection_pool_name=\"orders\"} 10",
       "db_client_connection_idle_max{db_client_connection_pool_name=\"orders\"} 10",
       "db_client_connection_idle_min{db_client_connection_pool_name=\"orders\"} 2",
       "db_client_connection_pending_requests{db_client_connection_pool_name=\"orders\"} 0",
       "# TYPE db_client_connection_timeouts_total counter",
       "db_client_connection_timeouts_total{db_client_connection_pool_name=\"orders\"} 0",
       "# TYPE db_client_connection_wait_time_seconds histogram",
       "db_client_connection_wait_time_seconds_count{db_client_connection_pool_name=\"orders\"} 2",
       "# TYPE db_client_connection_use_time_seconds histogram",
       "db_client_connection_use_time_seconds_count{db_client_connection_pool_name=\"orders\"} 1",
       "# TYPE db_client_connection_create_time_seconds histogram",
       // min_size connections were opened before the metrics were attached.
       "db_client_connection_create_time_seconds_count{db_client_connection_pool_name=\"orders\"} "
       "0"});
  EXPECT_EQ(text.find("codebase_mcp_pool_"), std::string::npos) << text;
  EXPECT_EQ(text.find("pool=\""), std::string::npos) << text;
}

TEST_F(PoolMetricsTest, OtelTimeoutsCountAcquireTimeouts) {
  PoolConfig c;
  c.name = "tiny";
  c.min_size = 1;
  c.max_size = 1;
  auto p = std::make_unique<Pool>(c, std::make_shared<FakeFactory>(server_), clock_);
  ASSERT_TRUE(p->wait_until_ready());
  PoolMetrics metrics(MetricsOptions{"codebase_mcp_pool_", "x", MetricsNaming::kOtel});
  metrics.add(*p);
  auto held = p->acquire();
  // The pool waits on the fake clock: advance it while the waiter queues.
  std::atomic<bool> timed_out{false};
  std::thread waiter([&] {
    try {
      p->acquire(2s);
    } catch (const AcquireTimeout&) {
      timed_out = true;
    }
  });
  ASSERT_TRUE(testing::eventually([&] { return p->get_statistics().waiting_requests == 1; }));
  clock_->advance(2500ms);
  waiter.join();
  ASSERT_TRUE(timed_out);
  const std::string text = scrape(metrics);
  EXPECT_NE(
      text.find("db_client_connection_timeouts_total{db_client_connection_pool_name=\"tiny\"} 1"),
      std::string::npos)
      << text;
}

TEST_F(PoolMetricsTest, BothNamingPublishesBothSetsFromOneSnapshot) {
  auto a = pool("orders");
  PoolMetrics metrics(MetricsOptions{"codebase_mcp_pool_", "1.2.3", MetricsNaming::kBoth});
  metrics.add(*a);
  { auto handle = a->acquire(); }
  const std::string text = scrape(metrics);
  expect_contains(
      text,
      {"codebase_mcp_pool_connections_idle{pool=\"orders\"} 2",
       "codebase_mcp_pool_acquisition_duration_seconds_count{pool=\"orders\"} 1",
       "db_client_connection_count{db_client_connection_pool_name=\"orders\","
       "db_client_connection_state=\"idle\"} 2",
       "db_client_connection_wait_time_seconds_count{db_client_connection_pool_name=\"orders\"} "
       "1"});
}

TEST(MetricsNaming, ParsesGuideOtelAndBothAndNamesTheVariableOtherwise) {
  EXPECT_EQ(parse_metrics_naming("guide", "METRICS_NAMING"), MetricsNaming::kGuide);
  EXPECT_EQ(parse_metrics_naming("OTel", "METRICS_NAMING"), MetricsNaming::kOtel);
  EXPECT_EQ(parse_metrics_naming("both", "METRICS_NAMING"), MetricsNaming::kBoth);
  try {
    parse_metrics_naming("prometheus", "METRICS_NAMING");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("METRICS_NAMING"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("prometheus"), std::string::npos) << error.what();
  }
}

TEST_F(PoolMetricsTest, AcquisitionBucketsIncludeSubMillisecondAndTheGuides) {
  const auto& buckets = PoolMetrics::acquisition_buckets();
  for (double bound : {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0}) {
    EXPECT_NE(std::find(buckets.begin(), buckets.end(), bound), buckets.end()) << bound;
  }
  EXPECT_TRUE(std::is_sorted(buckets.begin(), buckets.end()));
}

TEST_F(PoolMetricsTest, LeakSitesOldestHeldAgeAndRunTimeActionsArePublished) {
  PoolConfig c;
  c.name = "orders";
  c.leak_detection_timeout = std::chrono::seconds(30);
  Pool p(c, std::make_shared<FakeFactory>(server_), clock_);
  ASSERT_TRUE(p.wait_until_ready());
  PoolMetrics metrics(MetricsOptions{"codebase_mcp_pool_", "1.2.3"});
  metrics.add(p);
  EXPECT_NE(
      scrape(metrics).find("codebase_mcp_pool_oldest_held_connection_seconds{pool=\"orders\"} 0"),
      std::string::npos);
  EXPECT_EQ(scrape(metrics).find("leaked_connections_by_site"), std::string::npos);

  const int acquire_line = __LINE__ + 1;
  auto leaked = p.acquire();
  clock_->advance(std::chrono::seconds(31));
  ASSERT_TRUE(testing::eventually([&] { return p.get_statistics().leaked_connections == 1; }));
  p.set_max_size(20);
  const std::size_t drained = p.drain().closed_idle;
  ASSERT_GT(drained, 0u);
  const std::string text = scrape(metrics);
  EXPECT_NE(
      text.find("codebase_mcp_pool_connections_closed_total{pool=\"orders\",reason=\"drain\"} " +
                std::to_string(drained) + "\n"),
      std::string::npos)
      << text;
  const std::string site_series = "pool_metrics_test.cc:" + std::to_string(acquire_line) + "\"} 1";
  const auto by_site = text.find("codebase_mcp_pool_leaked_connections_by_site{function=\"");
  ASSERT_NE(by_site, std::string::npos) << text;
  EXPECT_NE(text.find(site_series, by_site), std::string::npos) << text;
  expect_contains(
      text, {"# TYPE codebase_mcp_pool_leaked_connections_by_site gauge",
             "codebase_mcp_pool_oldest_held_connection_seconds{pool=\"orders\"} 31",
             "codebase_mcp_pool_max_connections{pool=\"orders\"} 20",
             "# TYPE codebase_mcp_pool_resizes_total counter",
             "codebase_mcp_pool_resizes_total{pool=\"orders\"} 1",
             "codebase_mcp_pool_drains_total{pool=\"orders\"} 1",
             "codebase_mcp_pool_connections_closed_total{pool=\"orders\",reason=\"resize\"} 0"});
  leaked.release();
  EXPECT_EQ(scrape(metrics).find("leaked_connections_by_site"), std::string::npos);
}

}  // namespace
}  // namespace poolscope
