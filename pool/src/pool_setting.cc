#include "poolscope/pool_setting.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>

#include "poolscope/error.h"

namespace poolscope {
namespace {

std::string parse_text(std::string_view text, const std::string& /*source*/) {
  return std::string(text);
}

std::string format_value(const std::string& value) { return value; }
// Never the password: the README and --help show defaults, and any other
// use of format() must be as safe.
std::string format_value(const DatabaseUrl& url) { return url.redacted(); }
std::string format_value(std::size_t value) { return std::to_string(value); }
std::string format_value(bool value) { return value ? "true" : "false"; }
std::string format_value(double value) { return fmt::format("{}", value); }
std::string format_value(std::chrono::milliseconds value) { return format_duration(value); }
std::string format_value(std::chrono::seconds value) { return format_duration(value); }
std::string format_value(LogLevel value) { return std::string(to_string(value)); }
std::string format_value(QueuePolicy value) { return std::string(to_string(value)); }
std::string format_value(const std::vector<std::chrono::milliseconds>& values) {
  std::string text;
  for (const auto& value : values) text += (text.empty() ? "" : ",") + format_duration(value);
  return text;
}

template <auto Member, auto Parse>
void parse_into(std::string_view text, const std::string& source, PoolConfig& config) {
  config.*Member = Parse(text, source);
}

template <auto Member>
std::string format_member(const PoolConfig& config) {
  return format_value(config.*Member);
}

struct Names {
  std::string_view env;
  std::string_view flag;
  std::string_view value_name;
};

template <auto Member, auto Parse>
constexpr PoolSetting setting(std::string_view field, Names names, std::string_view help,
                              std::string_view empty_default = {}) {
  return {field,
          names.env,
          names.flag,
          names.value_name,
          help,
          empty_default,
          &parse_into<Member, Parse>,
          &format_member<Member>};
}

// The field is named once: as the member and, stringified, as its name.
#define POOLSCOPE_SETTING(member, parse, ...) \
  setting<&PoolConfig::member, &parse>(#member, __VA_ARGS__)

constexpr auto kSettings = std::to_array<PoolSetting>({
    POOLSCOPE_SETTING(database_url, DatabaseUrl::parse, {"DATABASE_URL", "--database.url", "URL"},
                      "libpq URI or key=value string; the password and sslpassword never appear "
                      "in logs, metrics, /health, MCP or errors. Prefer the variable: flags are "
                      "visible in ps",
                      "none"),
    POOLSCOPE_SETTING(name, parse_text, {"POOL_NAME", "--pool.name", "TEXT"},
                      "value of the pool label; pools in one process need distinct names"),
    POOLSCOPE_SETTING(application_name, parse_text,
                      {"POOL_APPLICATION_NAME", "--pool.application-name", "TEXT"},
                      "application_name of every pool connection, which pg_stat_activity and the "
                      "server view filter on; at most 63 printable ASCII characters",
                      "the URL's application_name, else poolscope"),
    POOLSCOPE_SETTING(min_size, parse_size, {"POOL_MIN_SIZE", "--pool.min-size", "N"},
                      "connections kept open even when idle; at most the max size"),
    POOLSCOPE_SETTING(max_size, parse_size, {"POOL_MAX_SIZE", "--pool.max-size", "N"},
                      "most connections open; at least 1 and at least the min size"),
    POOLSCOPE_SETTING(acquire_timeout, parse_duration,
                      {"POOL_ACQUIRE_TIMEOUT", "--pool.acquire-timeout", "DURATION"},
                      "how long acquire() waits for a connection"),
    POOLSCOPE_SETTING(init_timeout, parse_duration,
                      {"POOL_INIT_TIMEOUT", "--pool.init-timeout", "DURATION"},
                      "time to open the min size of connections at start; also libpq's connect "
                      "timeout (whole seconds, at least 2s)"),
    POOLSCOPE_SETTING(
        max_connection_lifetime, parse_duration,
        {"POOL_MAX_CONNECTION_LIFETIME", "--pool.max-connection-lifetime", "DURATION"},
        "recycle connections older than this (minus up to 10 % jitter)"),
    POOLSCOPE_SETTING(max_idle_time, parse_duration,
                      {"POOL_MAX_IDLE_TIME", "--pool.max-idle-time", "DURATION"},
                      "close idle connections above the min size after this"),
    POOLSCOPE_SETTING(command_timeout, parse_duration,
                      {"POOL_COMMAND_TIMEOUT", "--pool.command-timeout", "DURATION"},
                      "statement_timeout of every connection; 0 disables it"),
    POOLSCOPE_SETTING(enable_leak_detection, parse_bool,
                      {"POOL_ENABLE_LEAK_DETECTION", "--pool.enable-leak-detection", "BOOL"},
                      "report connections held longer than the leak detection timeout"),
    POOLSCOPE_SETTING(leak_detection_timeout, parse_duration,
                      {"POOL_LEAK_DETECTION_TIMEOUT", "--pool.leak-detection-timeout", "DURATION"},
                      "held longer than this counts as a leak"),
    POOLSCOPE_SETTING(shutdown_timeout, parse_duration,
                      {"POOL_SHUTDOWN_TIMEOUT", "--pool.shutdown-timeout", "DURATION"},
                      "graceful shutdown wait for active connections"),
    POOLSCOPE_SETTING(
        validation_idle_threshold, parse_duration,
        {"POOL_VALIDATION_IDLE_THRESHOLD", "--pool.validation-idle-threshold", "DURATION"},
        "run SELECT 1 before handing out a connection idle longer than this"),
    POOLSCOPE_SETTING(probe_idle_threshold, parse_duration,
                      {"POOL_PROBE_IDLE_THRESHOLD", "--pool.probe-idle-threshold", "DURATION"},
                      "poll the socket of a connection idle longer than this before handing it "
                      "out, which catches backends killed while idle; 0 polls every hand-out"),
    POOLSCOPE_SETTING(queue_policy, parse_queue_policy,
                      {"POOL_QUEUE_POLICY", "--pool.queue-policy", "POLICY"},
                      "who gets a connection under contention. barging: a returned connection "
                      "goes to whichever caller asks first while the longest waiter has waited "
                      "less than the barging wait bound, then to waiters in arrival order; fifo: "
                      "always to the longest waiter, a thread wake-up per hand-over but the "
                      "evenest service"),
    POOLSCOPE_SETTING(barging_wait_bound, parse_duration,
                      {"POOL_BARGING_WAIT_BOUND", "--pool.barging-wait-bound", "DURATION"},
                      "under barging, how long the longest waiter may wait before returned "
                      "connections go to waiters in arrival order; ignored by fifo"),
    POOLSCOPE_SETTING(health_check_interval, parse_duration,
                      {"POOL_HEALTH_CHECK_INTERVAL", "--pool.health-check-interval", "DURATION"},
                      "how often the background task validates one idle connection (at least "
                      "10ms)"),
    POOLSCOPE_SETTING(
        degraded_wait_threshold, parse_duration,
        {"POOL_DEGRADED_WAIT_THRESHOLD", "--pool.degraded-wait-threshold", "DURATION"},
        "a wait longer than this within the health window makes the pool degraded"),
    POOLSCOPE_SETTING(health_window, parse_window,
                      {"POOL_HEALTH_WINDOW", "--pool.health-window", "DURATION"},
                      "window of recent errors and peaks behind health; whole seconds from 1s to "
                      "600s"),
    POOLSCOPE_SETTING(reconnect_backoff, parse_duration_list,
                      {"POOL_RECONNECT_BACKOFF", "--pool.reconnect-backoff", "DURATIONS"},
                      "comma-separated delays between reconnection attempts while the database "
                      "is unreachable; the last repeats"),
    POOLSCOPE_SETTING(healthy_headroom, parse_fraction,
                      {"POOL_HEALTHY_HEADROOM", "--pool.healthy-headroom", "FRACTION"},
                      "headroom (max - active) / max at or above which the pool is healthy"),
    POOLSCOPE_SETTING(degraded_headroom, parse_fraction,
                      {"POOL_DEGRADED_HEADROOM", "--pool.degraded-headroom", "FRACTION"},
                      "headroom below which the pool is unhealthy; between the two it is "
                      "degraded"),
    POOLSCOPE_SETTING(log_level, parse_log_level, {"LOG_LEVEL", "--log.level", "LEVEL"},
                      "threshold of log lines: DEBUG, INFO, WARNING, ERROR or CRITICAL"),
});

#undef POOLSCOPE_SETTING

}  // namespace

void PoolSetting::apply(std::string_view text, const std::string& source,
                        PoolConfig& config) const {
  try {
    parse(text, source, config);
  } catch (const ConfigError& error) {
    throw ConfigError(error.variable(), error.value(), error.accepted(), std::string(field));
  }
}

std::string PoolSetting::default_text() const {
  std::string text = format(PoolConfig{});
  return text.empty() ? std::string(empty_default) : text;
}

std::span<const PoolSetting> pool_settings() noexcept { return kSettings; }

const PoolSetting* find_pool_setting(std::string_view field) noexcept {
  const auto found =
      std::find_if(std::begin(kSettings), std::end(kSettings),
                   [&](const PoolSetting& setting) { return setting.field == field; });
  return found == std::end(kSettings) ? nullptr : &*found;
}

PoolConfig read_pool_config(const SettingLookup& lookup) {
  PoolConfig config;
  std::map<std::string, std::string, std::less<>> source_of;  // field -> where it was set
  for (const PoolSetting& setting : kSettings) {
    auto given = lookup(setting);
    if (!given) continue;
    setting.apply(given->text, given->source, config);
    source_of[std::string(setting.field)] = std::move(given->source);
  }
  config.validate([&](std::string_view field) -> std::string {
    if (const auto found = source_of.find(field); found != source_of.end()) return found->second;
    if (const PoolSetting* setting = find_pool_setting(field)) return std::string(setting->env);
    return std::string(field);
  });
  return config;
}

}  // namespace poolscope
