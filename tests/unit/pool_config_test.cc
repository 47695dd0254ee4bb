#include "poolscope/pool_config.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "poolscope/connection.h"
#include "poolscope/error.h"
#include "poolscope/pool_setting.h"

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

// What validate() throws for `config`, which must be invalid.
ConfigError validation_error(const PoolConfig& config) {
  try {
    config.validate();
  } catch (const ConfigError& error) {
    return error;
  }
  ADD_FAILURE() << "the configuration validated";
  return ConfigError("", "", "");
}

TEST(PoolConfig, ACodeBuiltConfigErrorNamesTheField) {
  PoolConfig config;
  config.max_size = 0;
  const ConfigError too_small = validation_error(config);
  EXPECT_EQ(too_small.field(), "max_size");
  EXPECT_EQ(too_small.variable(), "max_size");
  EXPECT_STREQ(too_small.what(), "invalid max_size='0': expected a whole number from 1 to 10000");

  config.max_size = 3;
  config.min_size = 5;
  const ConfigError crossed = validation_error(config);
  EXPECT_EQ(crossed.field(), "min_size");
  EXPECT_STREQ(crossed.what(), "invalid min_size='5': must not exceed max_size (3)");

  config = PoolConfig{};
  config.degraded_headroom = 0.9;
  EXPECT_STREQ(validation_error(config).what(),
               "invalid degraded_headroom='0.9': expected a fraction from 0 to healthy_headroom "
               "(0.8)");
}

TEST(PoolConfig, AnEnvironmentErrorNamesTheVariableAndKnowsTheField) {
  for (const auto& [env, field] :
       std::map<std::string, std::string>{{"POOL_MAX_SIZE", "max_size"},
                                          {"POOL_QUEUE_POLICY", "queue_policy"},
                                          {"POOL_HEALTH_WINDOW", "health_window"},
                                          {"POOL_HEALTHY_HEADROOM", "healthy_headroom"}}) {
    try {
      from({{env, "nonsense"}});
      ADD_FAILURE() << env << " accepted nonsense";
    } catch (const ConfigError& error) {
      EXPECT_EQ(error.variable(), env);
      EXPECT_EQ(error.field(), field);
      EXPECT_EQ(error.value(), "nonsense");
    }
  }
  // Rejected by validation rather than parsing: named the same way.
  try {
    from({{"POOL_MAX_SIZE", "0"}});
    ADD_FAILURE() << "accepted POOL_MAX_SIZE=0";
  } catch (const ConfigError& error) {
    EXPECT_EQ(error.variable(), "POOL_MAX_SIZE");
    EXPECT_EQ(error.field(), "max_size");
  }
}

TEST(PoolConfig, AnInvalidDefaultIsNamedByItsVariable) {
  // min_size keeps its default of 2, which a max_size of 1 makes invalid.
  EXPECT_EQ(error_of({{"POOL_MAX_SIZE", "1"}}),
            "invalid POOL_MIN_SIZE='2': must not exceed POOL_MAX_SIZE (1)");
}

TEST(PoolConfig, ErrorsNameWhereEachValueCameFrom) {
  // As the exporter reads it: max_size from a flag, min_size from a variable.
  const auto lookup = [](const PoolSetting& setting) -> std::optional<SettingText> {
    if (setting.field == "max_size") return SettingText{"3", "--pool.max-size"};
    if (setting.field == "min_size") return SettingText{"5", "POOL_MIN_SIZE"};
    return std::nullopt;
  };
  try {
    read_pool_config(lookup);
    FAIL() << "accepted min 5 above max 3";
  } catch (const ConfigError& error) {
    EXPECT_STREQ(error.what(), "invalid POOL_MIN_SIZE='5': must not exceed --pool.max-size (3)");
    EXPECT_EQ(error.field(), "min_size");
  }
  try {
    read_pool_config([](const PoolSetting& setting) -> std::optional<SettingText> {
      if (setting.field == "acquire_timeout") return SettingText{"soon", "--pool.acquire-timeout"};
      return std::nullopt;
    });
    FAIL() << "accepted an acquire timeout of soon";
  } catch (const ConfigError& error) {
    EXPECT_EQ(error.variable(), "--pool.acquire-timeout");
    EXPECT_EQ(error.field(), "acquire_timeout");
    EXPECT_EQ(std::string(error.what()).rfind("invalid --pool.acquire-timeout='soon': expected", 0),
              0u)
        << error.what();
  }
}

TEST(PoolSettings, EveryDefaultPrintsAsTextThatParsesBackToIt) {
  const PoolConfig defaults;
  for (const PoolSetting& setting : pool_settings()) {
    const std::string text = setting.format(defaults);
    if (text.empty()) {
      EXPECT_FALSE(setting.empty_default.empty()) << setting.field << " has no default to show";
      continue;
    }
    EXPECT_EQ(setting.default_text(), text) << setting.field;
    PoolConfig parsed;
    parsed.name = "changed";  // so that name is really parsed back
    setting.apply(text, std::string(setting.env), parsed);
    EXPECT_EQ(setting.format(parsed), text) << setting.field;
  }
  EXPECT_EQ(find_pool_setting("max_size")->default_text(), "10");
  EXPECT_EQ(find_pool_setting("max_connection_lifetime")->default_text(), "1h");
  EXPECT_EQ(find_pool_setting("max_idle_time")->default_text(), "5m");
  EXPECT_EQ(find_pool_setting("probe_idle_threshold")->default_text(), "1ms");
  EXPECT_EQ(find_pool_setting("reconnect_backoff")->default_text(), "1s,2s,4s,8s,16s");
  EXPECT_EQ(find_pool_setting("healthy_headroom")->default_text(), "0.8");
  EXPECT_EQ(find_pool_setting("queue_policy")->default_text(), "barging");
  EXPECT_EQ(find_pool_setting("log_level")->default_text(), "INFO");
  EXPECT_EQ(find_pool_setting("database_url")->default_text(), "none");
}

TEST(PoolSettings, NamesAreUniqueAndFollowOneScheme) {
  std::set<std::string_view> fields, variables, flags;
  for (const PoolSetting& setting : pool_settings()) {
    EXPECT_TRUE(fields.insert(setting.field).second) << setting.field;
    EXPECT_TRUE(variables.insert(setting.env).second) << setting.env;
    EXPECT_TRUE(flags.insert(setting.flag).second) << setting.flag;
    EXPECT_TRUE(setting.flag.starts_with("--")) << setting.flag;
    EXPECT_FALSE(setting.help.empty()) << setting.field;
    EXPECT_FALSE(setting.value_name.empty()) << setting.field;
    EXPECT_EQ(find_pool_setting(setting.field), &setting);
  }
  EXPECT_EQ(find_pool_setting("no_such_field"), nullptr);
}

TEST(PoolSettings, FromEnvReadsEverySettingOfTheTable) {
  // Each setting set to a valid value other than its default is read.
  const std::map<std::string_view, std::string> values = {
      // key=value in libpq's keyword order: what redacted() prints back.
      {"database_url", "user=u dbname=db host=h"},
      {"name", "orders"},
      {"application_name", "orders-api"},
      {"min_size", "1"},
      {"max_size", "20"},
      {"acquire_timeout", "500ms"},
      {"init_timeout", "5s"},
      {"max_connection_lifetime", "2h"},
      {"max_idle_time", "2m"},
      {"command_timeout", "0s"},
      {"enable_leak_detection", "false"},
      {"leak_detection_timeout", "90s"},
      {"shutdown_timeout", "10s"},
      {"validation_idle_threshold", "3s"},
      {"probe_idle_threshold", "20ms"},
      {"queue_policy", "fifo"},
      {"barging_wait_bound", "5ms"},
      {"health_check_interval", "15s"},
      {"degraded_wait_threshold", "250ms"},
      {"health_window", "2m"},
      {"reconnect_backoff", "100ms,1s,5s"},
      {"healthy_headroom", "0.9"},
      {"degraded_headroom", "0.4"},
      {"log_level", "DEBUG"}};
  std::map<std::string, std::string> env;
  for (const PoolSetting& setting : pool_settings()) {
    const auto value = values.find(setting.field);
    ASSERT_NE(value, values.end()) << "no test value for " << setting.field;
    env[std::string(setting.env)] = value->second;
  }
  const PoolConfig config = from(env);
  const PoolConfig defaults;
  for (const PoolSetting& setting : pool_settings()) {
    EXPECT_EQ(setting.format(config), values.at(setting.field)) << setting.field;
    EXPECT_NE(setting.format(config), setting.format(defaults)) << setting.field;
  }
}

TEST(PoolConfig, DurationsPrintInTheLargestExactUnit) {
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(1ms), "1ms");
  EXPECT_EQ(format_duration(1500ms), "1500ms");
  EXPECT_EQ(format_duration(30s), "30s");
  EXPECT_EQ(format_duration(90s), "90s");
  EXPECT_EQ(format_duration(120s), "2m");
  EXPECT_EQ(format_duration(5400s), "90m");
  EXPECT_EQ(format_duration(7200s), "2h");
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
  try {
    make_libpqxx_factory(c);
    ADD_FAILURE() << "an unset URL was accepted";
  } catch (const ConfigError& error) {
    EXPECT_EQ(error.variable(), "DATABASE_URL");
    EXPECT_EQ(error.field(), "database_url");
  }
  c.database_url = "postgresql://";  // libpq's defaults: a valid choice
  EXPECT_NO_THROW(make_libpqxx_factory(c));
}

}  // namespace
}  // namespace poolscope
