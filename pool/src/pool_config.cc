#include "poolscope/pool_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "poolscope/error.h"
#include "poolscope/pool_setting.h"

namespace poolscope {

using namespace std::chrono_literals;

namespace {

// Longest duration accepted anywhere: a year. Longer values are typos, and
// the bound keeps every later arithmetic on time_points far from overflow.
constexpr double kMaxDurationMs = 365.0 * 24 * 3600 * 1000;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  return text;
}

constexpr auto kMaxWindow = std::chrono::milliseconds(600s);
constexpr const char* kWindowHelp = "expected whole seconds from 1s to 600s, e.g. 60s";

constexpr const char* kDurationHelp =
    "expected a duration such as 30, 30s, 500ms, 2m or 1h30m (units ns, us, ms, s, m, h; a bare "
    "number means seconds)";

double unit_to_ms(std::string_view unit) {
  if (unit == "ns") return 1e-6;
  if (unit == "us" || unit == "µs") return 1e-3;
  if (unit == "ms") return 1.0;
  if (unit == "s" || unit.empty()) return 1000.0;
  if (unit == "m") return 60'000.0;
  if (unit == "h") return 3'600'000.0;
  return -1.0;
}

}  // namespace

std::chrono::milliseconds parse_duration(std::string_view text, const std::string& variable) {
  const std::string original(text);
  text = trim(text);
  if (text.empty()) throw ConfigError(variable, original, kDurationHelp);
  if (text.front() == '-') {
    throw ConfigError(variable, original, std::string("must not be negative; ") + kDurationHelp);
  }
  if (text.front() == '+') text.remove_prefix(1);
  double total_ms = 0.0;
  std::size_t parts = 0;
  while (!text.empty()) {
    std::size_t digits = 0;
    while (digits < text.size() &&
           (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.')) {
      ++digits;
    }
    if (digits == 0) throw ConfigError(variable, original, kDurationHelp);
    const std::string number(text.substr(0, digits));
    if (std::count(number.begin(), number.end(), '.') > 1 || number == ".") {
      throw ConfigError(variable, original, kDurationHelp);
    }
    char* end = nullptr;
    const double value = std::strtod(number.c_str(), &end);
    if (end != number.c_str() + number.size() || !std::isfinite(value)) {
      throw ConfigError(variable, original, kDurationHelp);
    }
    text.remove_prefix(digits);
    std::size_t unit_len = 0;
    while (unit_len < text.size() && !std::isdigit(static_cast<unsigned char>(text[unit_len])) &&
           text[unit_len] != '.') {
      ++unit_len;
    }
    const std::string unit = lower(text.substr(0, unit_len));
    text.remove_prefix(unit_len);
    const double factor = unit_to_ms(unit);
    if (factor < 0) {
      throw ConfigError(variable, original,
                        fmt::format("unknown unit '{}'; {}", unit, kDurationHelp));
    }
    if (unit.empty() && (!text.empty() || parts > 0)) {
      throw ConfigError(variable, original, kDurationHelp);  // "1h30" is ambiguous
    }
    total_ms += value * factor;
    ++parts;
    if (total_ms > kMaxDurationMs) {
      throw ConfigError(variable, original, "too large: at most 8760h (one year)");
    }
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(total_ms)));
}

std::string format_duration(std::chrono::milliseconds duration) {
  const auto count = duration.count();
  if (count == 0) return "0s";
  if (duration % 1h == 0ms) return fmt::format("{}h", count / 3'600'000);
  if (duration % 1min == 0ms) return fmt::format("{}m", count / 60'000);
  if (duration % 1s == 0ms) return fmt::format("{}s", count / 1000);
  return fmt::format("{}ms", count);
}

std::vector<std::chrono::milliseconds> parse_duration_list(std::string_view text,
                                                           const std::string& variable) {
  std::vector<std::chrono::milliseconds> delays;
  std::string_view rest = text;
  for (;;) {
    const std::size_t comma = rest.find(',');
    std::chrono::milliseconds delay{};
    try {
      delay = parse_duration(rest.substr(0, comma), variable);
    } catch (const ConfigError&) {
      delay = 0ms;  // reported below with the whole list
    }
    if (delay <= 0ms) {
      throw ConfigError(variable, std::string(text),
                        "expected positive durations separated by commas, e.g. 1s,2s,4s");
    }
    delays.push_back(delay);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return delays;
}

std::chrono::seconds parse_window(std::string_view text, const std::string& variable) {
  std::chrono::milliseconds window{};
  try {
    window = parse_duration(text, variable);
  } catch (const ConfigError&) {
    window = 0ms;  // reported below
  }
  if (window < 1s || window > kMaxWindow || window % 1s != 0ms) {
    throw ConfigError(variable, std::string(text), kWindowHelp);
  }
  return std::chrono::duration_cast<std::chrono::seconds>(window);
}

double parse_fraction(std::string_view text, const std::string& variable) {
  const std::string value(trim(text));
  char* end = nullptr;
  const double parsed = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size() || !std::isfinite(parsed) ||
      parsed < 0.0 || parsed > 1.0) {
    throw ConfigError(variable, std::string(text), "expected a fraction from 0 to 1, e.g. 0.8");
  }
  return parsed;
}

std::size_t parse_size(std::string_view text, const std::string& variable) {
  const std::string original(text);
  text = trim(text);
  std::size_t value = 0;
  const auto* begin = text.data();
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    const bool negative = !text.empty() && text.front() == '-';
    const bool overflow = ec == std::errc::result_out_of_range;
    throw ConfigError(variable, original,
                      negative   ? "must not be negative; expected a whole number"
                      : overflow ? "too large; expected a whole number"
                                 : "expected a whole number");
  }
  return value;
}

bool parse_bool(std::string_view text, const std::string& variable) {
  const std::string value = lower(trim(text));
  if (value == "true" || value == "1" || value == "yes" || value == "on") return true;
  if (value == "false" || value == "0" || value == "no" || value == "off") return false;
  throw ConfigError(variable, std::string(text),
                    "expected true or false (also 1/0, yes/no, on/off)");
}

LogLevel parse_log_level(std::string_view text, const std::string& variable) {
  const std::string value = lower(trim(text));
  if (value == "debug") return LogLevel::kDebug;
  if (value == "info") return LogLevel::kInfo;
  if (value == "warning" || value == "warn") return LogLevel::kWarning;
  if (value == "error") return LogLevel::kError;
  if (value == "critical") return LogLevel::kCritical;
  throw ConfigError(variable, std::string(text),
                    "expected DEBUG, INFO, WARNING, ERROR or CRITICAL");
}

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kError:
      return "ERROR";
    case LogLevel::kCritical:
      return "CRITICAL";
  }
  return "INFO";
}

QueuePolicy parse_queue_policy(std::string_view text, const std::string& variable) {
  const std::string value = lower(trim(text));
  if (value == "barging") return QueuePolicy::kBarging;
  if (value == "fifo") return QueuePolicy::kFifo;
  throw ConfigError(variable, std::string(text), "expected barging or fifo");
}

std::string_view to_string(QueuePolicy policy) noexcept {
  switch (policy) {
    case QueuePolicy::kBarging:
      return "barging";
    case QueuePolicy::kFifo:
      return "fifo";
  }
  return "barging";
}

void PoolConfig::validate() const {
  validate([](std::string_view field) { return std::string(field); });
}

void PoolConfig::validate(const FieldNamer& name_of) const {
  const auto reject = [&](std::string_view field, std::string value, std::string accepted) {
    throw ConfigError(name_of(field), std::move(value), std::move(accepted), std::string(field));
  };
  const auto at_least = [&](std::string_view field, std::chrono::milliseconds value,
                            std::chrono::milliseconds min, const char* accepted) {
    if (value < min) reject(field, fmt::format("{}ms", value.count()), accepted);
  };
  if (name.empty() || name.size() > 128) reject("name", name, "expected 1 to 128 characters");
  if (application_name.size() > 63 ||
      !std::all_of(application_name.begin(), application_name.end(),
                   [](unsigned char c) { return c >= 0x20 && c < 0x7f; })) {
    reject("application_name", application_name, "expected at most 63 printable ASCII characters");
  }
  if (max_size < 1 || max_size > kMaxPoolSize) {
    reject("max_size", std::to_string(max_size),
           fmt::format("expected a whole number from 1 to {}", kMaxPoolSize));
  }
  if (min_size > max_size) {
    reject("min_size", std::to_string(min_size),
           fmt::format("must not exceed {} ({})", name_of("max_size"), max_size));
  }
  const auto positive = "must be greater than 0";
  const auto not_negative = "must not be negative";
  at_least("acquire_timeout", acquire_timeout, 1ms, positive);
  at_least("init_timeout", init_timeout, 1ms, positive);
  at_least("max_connection_lifetime", max_connection_lifetime, 1ms, positive);
  at_least("max_idle_time", max_idle_time, 1ms, positive);
  at_least("command_timeout", command_timeout, 0ms, not_negative);
  at_least("leak_detection_timeout", leak_detection_timeout, 1ms, positive);
  at_least("shutdown_timeout", shutdown_timeout, 0ms, not_negative);
  at_least("validation_idle_threshold", validation_idle_threshold, 0ms, not_negative);
  at_least("probe_idle_threshold", probe_idle_threshold, 0ms, not_negative);
  at_least("barging_wait_bound", barging_wait_bound, 0ms, not_negative);
  at_least("health_check_interval", health_check_interval, 10ms, "must be at least 10ms");
  if (!(healthy_headroom > 0.0 && healthy_headroom <= 1.0)) {
    reject("healthy_headroom", fmt::format("{}", healthy_headroom),
           "expected a fraction in (0, 1]");
  }
  if (!(degraded_headroom >= 0.0 && degraded_headroom <= healthy_headroom)) {
    reject("degraded_headroom", fmt::format("{}", degraded_headroom),
           fmt::format("expected a fraction from 0 to {} ({})", name_of("healthy_headroom"),
                       healthy_headroom));
  }
  at_least("degraded_wait_threshold", degraded_wait_threshold, 0ms, not_negative);
  if (health_window < 1s || health_window > kMaxWindow) {
    reject("health_window", fmt::format("{}s", health_window.count()), kWindowHelp);
  }
  if (reconnect_backoff.empty()) reject("reconnect_backoff", "", "needs at least one delay");
  for (const auto& delay : reconnect_backoff) {
    at_least("reconnect_backoff", delay, 1ms, positive);
  }
}

PoolConfig PoolConfig::from_env(
    const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  return read_pool_config([&](const PoolSetting& setting) -> std::optional<SettingText> {
    const std::string variable(setting.env);
    if (auto value = getenv(variable)) return SettingText{std::move(*value), variable};
    return std::nullopt;
  });
}

PoolConfig PoolConfig::from_env() {
  return from_env([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace poolscope
