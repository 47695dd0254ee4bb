#include "poolscope/pool_config.h"

#include <gtest/gtest.h>

#include <map>

#include "poolscope/connection.h"
#include "poolscope/error.h"

namespace poolscope {
namespace {

using namespace std::chrono_literals;

PoolConfig from(const std::map<std::string, std::string>& env) {
  return PoolConfig::from_env([&](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

std::string error_of(const std::map<std::string, std::string>& env) {
  try {
    from(env);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

TEST(PoolConfig, DefaultsAreTheGuides) {
  const PoolConfig c = from({});
  EXPECT_EQ(c.min_size, 2u);
  EXPECT_EQ(c.max_size, 10u);
  EXPECT_EQ(c.acquire_timeout, 30s);
  EXPECT_EQ(c.init_timeout, 2s);
  EXPECT_EQ(c.max_connection_lifetime, 3600s);
  EXPECT_EQ(c.max_idle_time, 300s);
  EXPECT_EQ(c.command_timeout, 60s);
  EXPECT_TRUE(c.enable_leak_detection);
  EXPECT_EQ(c.leak_detection_timeout, 30s);
  EXPECT_EQ(c.shutdown_timeout, 30s);
  EXPECT_EQ(c.validation_idle_threshold, 1s);
  EXPECT_EQ(c.probe_idle_threshold, 1ms);
  EXPECT_EQ(c.queue_policy, QueuePolicy::kBarging);
  EXPECT_EQ(c.barging_wait_bound, PoolConfig{}.barging_wait_bound);
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
}

TEST(PoolConfig, ReadsEveryVariable) {
  const PoolConfig c = from({{"DATABASE_URL", "postgresql://u@h/db"},
                             {"POOL_NAME", "orders"},
                             {"POOL_MIN_SIZE", "1"},
                             {"POOL_MAX_SIZE", "20"},
                             {"POOL_ACQUIRE_TIMEOUT", "500ms"},
                             {"POOL_INIT_TIMEOUT", "5"},
                             {"POOL_MAX_CONNECTION_LIFETIME", "1h"},
                             {"POOL_MAX_IDLE_TIME", "2m"},
                             {"POOL_COMMAND_TIMEOUT", "0"},
                             {"POOL_ENABLE_LEAK_DETECTION", "false"},
                             {"POOL_LEAK_DETECTION_TIMEOUT", "1m30s"},
                             {"POOL_SHUTDOWN_TIMEOUT", "10s"},
                             {"POOL_VALIDATION_IDLE_THRESHOLD", "3s"},
                             {"POOL_PROBE_IDLE_THRESHOLD", "20ms"},
                             {"POOL_QUEUE_POLICY", " FIFO "},
                             {"POOL_BARGING_WAIT_BOUND", "5ms"},
                             {"POOL_HEALTH_CHECK_INTERVAL", "15s"},
                             {"POOL_DEGRADED_WAIT_THRESHOLD", "250ms"},
                             {"POOL_HEALTH_WINDOW", "2m"},
                             {"POOL_RECONNECT_BACKOFF", "100ms, 1s,5s"},
                             {"POOL_HEALTHY_HEADROOM", "0.9"},
                             {"POOL_DEGRADED_HEADROOM", "0.4"},
                             {"LOG_LEVEL", "debug"}});
  EXPECT_EQ(c.database_url.value("host"), "h");
  EXPECT_EQ(c.database_url.value("dbname"), "db");
  EXPECT_EQ(c.name, "orders");
  EXPECT_EQ(c.min_size, 1u);
  EXPECT_EQ(c.max_size, 20u);
  EXPECT_EQ(c.acquire_timeout, 500ms);
  EXPECT_EQ(c.init_timeout, 5s);
  EXPECT_EQ(c.max_connection_lifetime, 3600s);
  EXPECT_EQ(c.max_idle_time, 120s);
  EXPECT_EQ(c.command_timeout, 0s);
  EXPECT_FALSE(c.enable_leak_detection);
  EXPECT_EQ(c.leak_detection_timeout, 90s);
  EXPECT_EQ(c.shutdown_timeout, 10s);
  EXPECT_EQ(c.validation_idle_threshold, 3s);
  EXPECT_EQ(c.probe_idle_threshold, 20ms);
  EXPECT_EQ(c.queue_policy, QueuePolicy::kFifo);
  EXPECT_EQ(c.barging_wait_bound, 5ms);
  EXPECT_EQ(c.health_check_interval, 15s);
  EXPECT_EQ(c.degraded_wait_threshold, 250ms);
  EXPECT_EQ(c.health_window, 120s);
  EXPECT_EQ(c.reconnect_backoff, (std::vector<std::chrono::milliseconds>{100ms, 1s, 5s}));
  EXPECT_DOUBLE_EQ(c.healthy_headroom, 0.9);
  EXPECT_DOUBLE_EQ(c.degraded_headroom, 0.4);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
}

TEST(PoolConfig, DurationsAcceptGoStyleUnits) {
  EXPECT_EQ(parse_duration("30", "X"), 30s);
  EXPECT_EQ(parse_duration("1.5s", "X"), 1500ms);
  EXPECT_EQ(parse_duration("250ms", "X"), 250ms);
  EXPECT_EQ(parse_duration("2m", "X"), 120s);
  EXPECT_EQ(parse_duration("1h30m", "X"), 5400s);
  EXPECT_EQ(parse_duration(" 10s ", "X"), 10s);
  EXPECT_EQ(parse_duration("1500us", "X"), 2ms);
  EXPECT_EQ(parse_duration("0", "X"), 0s);
}

TEST(PoolConfig, BadDurationsNameTheVariableAndValue) {
  for (const std::string bad :
       {"", "abc", "-5", "10x", "5 s s", "1.2.3s", "1h30", ".", "s", "99999999999h", "1e9"}) {
    try {
      parse_duration(bad, "POOL_ACQUIRE_TIMEOUT");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ConfigError& error) {
      EXPECT_EQ(error.variable(), "POOL_ACQUIRE_TIMEOUT");
      EXPECT_NE(std::string(error.what()).find("POOL_ACQUIRE_TIMEOUT='" + bad + "'"),
                std::string::npos)
          << error.what();
    }
  }
}

TEST(PoolConfig, InvalidValuesFailWithOneClearMessage) {
  EXPECT_EQ(error_of({{"POOL_MAX_SIZE", "abc"}}),
            "invalid POOL_MAX_SIZE='abc': expected a whole number");
  EXPECT_EQ(error_of({{"POOL_MAX_SIZE", "-1"}}),
            "invalid POOL_MAX_SIZE='-1': must not be negative; expected a whole number");
  EXPECT_EQ(error_of({{"POOL_MAX_SIZE", "99999999999999999999999"}}),
            "invalid POOL_MAX_SIZE='99999999999999999999999': too large; expected a whole number");
  EXPECT_EQ(error_of({{"POOL_MAX_SIZE", "0"}}),
            "invalid POOL_MAX_SIZE='0': expected a whole number from 1 to 10000");
  EXPECT_EQ(error_of({{"POOL_MIN_SIZE", "5"}, {"POOL_MAX_SIZE", "3"}}),
            "invalid POOL_MIN_SIZE='5': must not exceed POOL_MAX_SIZE (3)");
  EXPECT_EQ(error_of({{"POOL_ACQUIRE_TIMEOUT", "0"}}),
            "invalid POOL_ACQUIRE_TIMEOUT='0ms': must be greater than 0");
  EXPECT_EQ(error_of({{"POOL_ENABLE_LEAK_DETECTION", "maybe"}}),
            "invalid POOL_ENABLE_LEAK_DETECTION='maybe': expected true or false (also 1/0, yes/no, "
            "on/off)");
  EXPECT_EQ(error_of({{"LOG_LEVEL", "LOUD"}}),
            "invalid LOG_LEVEL='LOUD': expected DEBUG, INFO, WARNING, ERROR or CRITICAL");
  EXPECT_EQ(error_of({{"POOL_HEALTHY_HEADROOM", "1.5"}}),
            "invalid POOL_HEALTHY_HEADROOM='1.5': expected a fraction from 0 to 1, e.g. 0.8");
  EXPECT_EQ(error_of({{"POOL_PROBE_IDLE_THRESHOLD", "soon"}}),
            "invalid POOL_PROBE_IDLE_THRESHOLD='soon': expected a duration such as 30, 30s, 500ms, "
            "2m or 1h30m (units ns, us, ms, s, m, h; a bare number means seconds)");
  EXPECT_EQ(error_of({{"POOL_QUEUE_POLICY", "lifo"}}),
            "invalid POOL_QUEUE_POLICY='lifo': expected barging or fifo");
  EXPECT_EQ(error_of({{"POOL_BARGING_WAIT_BOUND", "-1ms"}})
                .rfind("invalid POOL_BARGING_WAIT_BOUND='-1ms'", 0),
            0u);
  EXPECT_EQ(
      error_of({{"POOL_HEALTH_WINDOW", "1500ms"}}),
      "invalid POOL_HEALTH_WINDOW='1500ms': expected whole seconds from 1s to 600s, e.g. 60s");
  EXPECT_EQ(error_of({{"POOL_HEALTH_WINDOW", "11m"}}),
            "invalid POOL_HEALTH_WINDOW='11m': expected whole seconds from 1s to 600s, e.g. 60s");
  EXPECT_EQ(error_of({{"POOL_RECONNECT_BACKOFF", "1s,,4s"}}),
            "invalid POOL_RECONNECT_BACKOFF='1s,,4s': expected positive durations separated by "
            "commas, e.g. 1s,2s,4s");
  EXPECT_EQ(error_of({{"POOL_RECONNECT_BACKOFF", "0"}}),
            "invalid POOL_RECONNECT_BACKOFF='0': expected positive durations separated by "
            "commas, e.g. 1s,2s,4s");
  EXPECT_EQ(error_of({{"POOL_DEGRADED_WAIT_THRESHOLD", "-1s"}}),
            "invalid POOL_DEGRADED_WAIT_THRESHOLD='-1s': must not be negative; expected a "
            "duration such as 30, 30s, 500ms, 2m or 1h30m (units ns, us, ms, s, m, h; a bare "
            "number means seconds)");
  EXPECT_EQ(error_of({{"POOL_NAME", ""}}), "invalid POOL_NAME='': expected 1 to 128 characters");
  EXPECT_EQ(error_of({{"POOL_APPLICATION_NAME", std::string(64, 'x')}}),
            "invalid POOL_APPLICATION_NAME='" + std::string(64, 'x') +
                "': expected at most 63 printable ASCII characters");
  EXPECT_EQ(error_of({{"POOL_APPLICATION_NAME", "tab\there"}}),
            "invalid POOL_APPLICATION_NAME='tab\there': expected at most 63 printable ASCII "
            "characters");
}

TEST(PoolConfig, ApplicationNameIsEmptyByDefaultAndReadFromTheEnvironment) {
  EXPECT_EQ(PoolConfig{}.application_name, "");
  EXPECT_EQ(from({{"POOL_APPLICATION_NAME", "orders-api"}}).application_name, "orders-api");
  EXPECT_EQ(from({{"POOL_APPLICATION_NAME", std::string(63, 'x')}}).application_name,
            std::string(63, 'x'));
}

TEST(PoolConfig, GarbageDatabaseUrlIsRejectedWithoutEchoingThePassword) {
  const std::string message =
      error_of({{"DATABASE_URL", "postgresql://app:s3cret@host:5432/db?sslmode=bogus&nonsense=1"}});
  EXPECT_NE(message.find("invalid DATABASE_URL="), std::string::npos) << message;
  EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
}

TEST(PoolConfig, AnUnsetDatabaseUrlIsRejectedWhenThePoolConnects) {
  EXPECT_TRUE(from({}).database_url.empty());
  PoolConfig c;
  c.database_url = "";
  EXPECT_THROW(make_libpqxx_factory(c), ConfigError);
  c.database_url = "postgresql://";  // libpq's defaults: a valid choice
  EXPECT_NO_THROW(make_libpqxx_factory(c));
}

}  // namespace
}  // namespace poolscope
