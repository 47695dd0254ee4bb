#include "health_document.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::set<std::string> keys(const json& object) {
  std::set<std::string> names;
  for (const auto& [name, value] : object.items()) names.insert(name);
  return names;
}

std::chrono::system_clock::time_point at(std::chrono::milliseconds since_epoch) {
  return std::chrono::system_clock::time_point(since_epoch);
}

PoolStatistics serving_pool() {
  PoolStatistics stats;
  stats.pool_name = "default";
  stats.state = PoolState::kHealthy;
  stats.health = HealthStatus::kHealthy;
  stats.total_connections = 5;
  stats.idle_connections = 4;
  stats.active_connections = 1;
  stats.waiting_requests = 0;
  stats.uptime_seconds = 3600.5;
  return stats;
}

TEST(HealthDocument, HasTheGuidesFieldsPlusLeaks) {
  const json document = health_document(serving_pool(), at(1760365800000ms));
  EXPECT_EQ(keys(document),
            (std::set<std::string>{"status", "timestamp", "database", "leaks", "uptime_seconds"}));
  EXPECT_EQ(keys(document["database"]),
            (std::set<std::string>{"status", "pool", "latency_ms", "last_error"}));
  EXPECT_EQ(keys(document["database"]["pool"]),
            (std::set<std::string>{"total", "idle", "active", "waiting"}));
}

TEST(HealthDocument, CarriesTheSnapshotsValues) {
  PoolStatistics stats = serving_pool();
  stats.last_validation_latency_ms = 2.3;
  const json document = health_document(stats, at(1760365800000ms));
  EXPECT_EQ(document["status"], "healthy");
  EXPECT_EQ(document["database"]["status"], "connected");
  EXPECT_EQ(document["database"]["pool"]["total"], 5);
  EXPECT_EQ(document["database"]["pool"]["idle"], 4);
  EXPECT_EQ(document["database"]["pool"]["active"], 1);
  EXPECT_EQ(document["database"]["pool"]["waiting"], 0);
  EXPECT_DOUBLE_EQ(document["database"]["latency_ms"].get<double>(), 2.3);
  EXPECT_DOUBLE_EQ(document["uptime_seconds"].get<double>(), 3600.5);
}

TEST(HealthDocument, LatencyAndLastErrorAreNullUntilKnown) {
  const json document = health_document(serving_pool(), at(0ms));
  EXPECT_TRUE(document["database"]["latency_ms"].is_null());
  EXPECT_TRUE(document["database"]["last_error"].is_null());
}

TEST(HealthDocument, LastErrorIsTheStoredMessage) {
  PoolStatistics stats = serving_pool();
  stats.last_error = "connection refused";
  EXPECT_EQ(health_document(stats, at(0ms))["database"]["last_error"], "connection refused");
}

TEST(HealthDocument, TimestampIsUtcWithMillisecondsAndZ) {
  // 2025-10-13T14:30:00.123Z
  EXPECT_EQ(health_document(serving_pool(), at(1760365800123ms))["timestamp"],
            "2025-10-13T14:30:00.123Z");
  EXPECT_EQ(iso8601_utc(at(0ms)), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(iso8601_utc(at(-1ms)), "1969-12-31T23:59:59.999Z");
}

TEST(HealthDocument, StatusFollowsThePoolsHealth) {
  PoolStatistics stats = serving_pool();
  stats.health = HealthStatus::kDegraded;
  EXPECT_EQ(health_document(stats, at(0ms))["status"], "degraded");
  stats.health = HealthStatus::kUnhealthy;
  EXPECT_EQ(health_document(stats, at(0ms))["status"], "unhealthy");
}

TEST(HealthDocument, DatabaseStatusFollowsTheLifecycle) {
  PoolStatistics stats = serving_pool();
  stats.state = PoolState::kInitializing;
  EXPECT_EQ(database_status(stats), "connecting");
  stats.state = PoolState::kRecovering;
  EXPECT_EQ(database_status(stats), "reconnecting");
  stats.state = PoolState::kShuttingDown;
  EXPECT_EQ(database_status(stats), "disconnecting");
  stats.state = PoolState::kTerminated;
  EXPECT_EQ(database_status(stats), "disconnected");
  stats.state = PoolState::kUnhealthy;
  stats.total_connections = stats.idle_connections = stats.active_connections = 0;
  EXPECT_EQ(database_status(stats), "disconnected");
  stats.total_connections = stats.active_connections = 10;
  EXPECT_EQ(database_status(stats), "connected");
}

TEST(StatisticsDocument, HasEveryStatisticsField) {
  PoolStatistics stats = serving_pool();
  stats.pool_created_at = at(1760365800000ms);
  stats.last_health_check = at(1760365801000ms);
  stats.last_error_time = at(1760365802000ms);
  stats.last_error = "boom";
  stats.connections_closed[static_cast<std::size_t>(CloseReason::kIdle)] = 3;
  stats.errors[static_cast<std::size_t>(ErrorType::kAcquireTimeout)] = 4;
  const json document = statistics_document(stats);
  for (const char* field : {"pool_name",
                            "state",
                            "health",
                            "total_connections",
                            "idle_connections",
                            "active_connections",
                            "waiting_requests",
                            "pending_connections",
                            "leaked_connections",
                            "min_size",
                            "max_size",
                            "avg_acquisition_time_ms",
                            "peak_active_connections",
                            "peak_wait_time_ms",
                            "recent_peak_active_connections",
                            "recent_peak_wait_time_ms",
                            "recent_errors",
                            "total_acquisitions",
                            "total_releases",
                            "acquire_timeouts",
                            "connections_created",
                            "connection_failures",
                            "reconnect_attempts",
                            "leaks_detected",
                            "leaks_returned",
                            "connections_closed",
                            "errors",
                            "pool_created_at",
                            "last_health_check",
                            "last_validation_latency_ms",
                            "last_error",
                            "last_error_time",
                            "uptime_seconds"}) {
    EXPECT_TRUE(document.contains(field)) << field;
  }
  EXPECT_EQ(document["state"], "healthy");
  EXPECT_EQ(document["pool_created_at"], "2025-10-13T14:30:00.000Z");
  EXPECT_EQ(document["last_health_check"], "2025-10-13T14:30:01.000Z");
  EXPECT_EQ(document["last_error_time"], "2025-10-13T14:30:02.000Z");
  EXPECT_EQ(document["connections_closed"]["idle"], 3);
  EXPECT_EQ(document["connections_closed"].size(), kCloseReasonCount);
  EXPECT_EQ(document["errors"]["acquire_timeout"], 4);
  EXPECT_EQ(document["errors"].size(), kErrorTypeCount);
}

TEST(StatisticsDocument, UnsetTimestampsAreNull) {
  const json document = statistics_document(serving_pool());
  EXPECT_TRUE(document["last_health_check"].is_null());
  EXPECT_TRUE(document["last_error_time"].is_null());
  EXPECT_TRUE(document["last_error"].is_null());
}

TEST(HealthDocument, ListsLeakedConnectionsWithTheirSites) {
  PoolStatistics stats = serving_pool();
  stats.leaked_connections = 12;  // more than the snapshot lists
  stats.oldest_held_seconds = 95.5;
  stats.leaked.push_back(LeakedConnection{7, 95.5, "src/orders.cc", 42, "void place_order()"});
  stats.leak_sites.push_back(LeakSite{"src/orders.cc", 42, "void place_order()", 12, 95.5});
  const json document = health_document(stats, at(1760365800000ms));
  const json& leaks = document["leaks"];
  EXPECT_EQ(leaks["count"], 12);
  EXPECT_EQ(leaks["oldest_held_seconds"], 95.5);
  ASSERT_EQ(leaks["connections"].size(), 1u);
  EXPECT_EQ(leaks["connections"][0], (json{{"id", "conn_7"},
                                           {"held_seconds", 95.5},
                                           {"site", "src/orders.cc:42"},
                                           {"function", "void place_order()"}}));
  ASSERT_EQ(leaks["sites"].size(), 1u);
  EXPECT_EQ(leaks["sites"][0], (json{{"site", "src/orders.cc:42"},
                                     {"function", "void place_order()"},
                                     {"connections", 12},
                                     {"oldest_held_seconds", 95.5}}));
  EXPECT_EQ(statistics_document(stats)["leaks"], leaks);
}

TEST(HealthDocument, NoLeaksGiveEmptyLists) {
  const json leaks = health_document(serving_pool(), at(1760365800000ms))["leaks"];
  EXPECT_EQ(leaks, (json{{"count", 0},
                         {"oldest_held_seconds", 0.0},
                         {"connections", json::array()},
                         {"sites", json::array()}}));
}

}  // namespace
}  // namespace poolscope::exporter
