#include "poolscope/pool_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "poolscope/error.h"

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

std::chrono::milliseconds check_range(std::chrono::milliseconds value, const std::string& variable,
                                      std::chrono::milliseconds min, const char* what) {
  if (value < min) {
    throw ConfigError(variable, fmt::format("{}ms", value.count()), what);
  }
  return value;
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
  if (name.empty() || name.size() > 128) {
    throw ConfigError("POOL_NAME", name, "expected 1 to 128 characters");
  }
  if (application_name.size() > 63 ||
      !std::all_of(application_name.begin(), application_name.end(),
                   [](unsigned char c) { return c >= 0x20 && c < 0x7f; })) {
    throw ConfigError("POOL_APPLICATION_NAME", application_name,
                      "expected at most 63 printable ASCII characters");
  }
  if (max_size < 1 || max_size > kMaxPoolSize) {
    throw ConfigError("POOL_MAX_SIZE", std::to_string(max_size),
                      fmt::format("expected a whole number from 1 to {}", kMaxPoolSize));
  }
  if (min_size > max_size) {
    throw ConfigError("POOL_MIN_SIZE", std::to_string(min_size),
                      fmt::format("must not exceed POOL_MAX_SIZE ({})", max_size));
  }
  const auto positive = "must be greater than 0";
  check_range(acquire_timeout, "POOL_ACQUIRE_TIMEOUT", 1ms, positive);
  check_range(init_timeout, "POOL_INIT_TIMEOUT", 1ms, positive);
  check_range(max_connection_lifetime, "POOL_MAX_CONNECTION_LIFETIME", 1ms, positive);
  check_range(max_idle_time, "POOL_MAX_IDLE_TIME", 1ms, positive);
  check_range(command_timeout, "POOL_COMMAND_TIMEOUT", 0ms, "must not be negative");
  check_range(leak_detection_timeout, "POOL_LEAK_DETECTION_TIMEOUT", 1ms, positive);
  check_range(shutdown_timeout, "POOL_SHUTDOWN_TIMEOUT", 0ms, "must not be negative");
  check_range(validation_idle_threshold, "POOL_VALIDATION_IDLE_THRESHOLD", 0ms,
              "must not be negative");
  check_range(probe_idle_threshold, "POOL_PROBE_IDLE_THRESHOLD", 0ms, "must not be negative");
  check_range(barging_wait_bound, "POOL_BARGING_WAIT_BOUND", 0ms, "must not be negative");
  check_range(health_check_interval, "POOL_HEALTH_CHECK_INTERVAL", 10ms, "must be at least 10ms");
  if (!(healthy_headroom > 0.0 && healthy_headroom <= 1.0)) {
    throw ConfigError("POOL_HEALTHY_HEADROOM", fmt::format("{}", healthy_headroom),
                      "expected a fraction in (0, 1]");
  }
  if (!(degraded_headroom >= 0.0 && degraded_headroom <= healthy_headroom)) {
    throw ConfigError(
        "POOL_DEGRADED_HEADROOM", fmt::format("{}", degraded_headroom),
        fmt::format("expected a fraction from 0 to POOL_HEALTHY_HEADROOM ({})", healthy_headroom));
  }
  check_range(degraded_wait_threshold, "POOL_DEGRADED_WAIT_THRESHOLD", 0ms, "must not be negative");
  if (health_window < 1s || health_window > kMaxWindow) {
    throw ConfigError("POOL_HEALTH_WINDOW", fmt::format("{}s", health_window.count()), kWindowHelp);
  }
  if (reconnect_backoff.empty()) {
    throw ConfigError("POOL_RECONNECT_BACKOFF", "", "needs at least one delay");
  }
  for (const auto& delay : reconnect_backoff) {
    check_range(delay, "POOL_RECONNECT_BACKOFF", 1ms, positive);
  }
}

PoolConfig PoolConfig::from_env(
    const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  PoolConfig config;
  auto with = [&](const std::string& variable, auto&& apply) {
    if (auto value = getenv(variable)) apply(*value, variable);
  };
  auto duration = [](std::chrono::milliseconds& field) {
    return [&field](const std::string& value, const std::string& variable) {
      field = parse_duration(value, variable);
    };
  };
  with("DATABASE_URL",
       [&](const std::string& value, const std::string&) { config.database_url = value; });
  with("POOL_NAME", [&](const std::string& value, const std::string&) { config.name = value; });
  with("POOL_APPLICATION_NAME",
       [&](const std::string& value, const std::string&) { config.application_name = value; });
  with("POOL_MIN_SIZE", [&](const std::string& value, const std::string& variable) {
    config.min_size = parse_size(value, variable);
  });
  with("POOL_MAX_SIZE", [&](const std::string& value, const std::string& variable) {
    config.max_size = parse_size(value, variable);
  });
  with("POOL_ACQUIRE_TIMEOUT", duration(config.acquire_timeout));
  with("POOL_INIT_TIMEOUT", duration(config.init_timeout));
  with("POOL_MAX_CONNECTION_LIFETIME", duration(config.max_connection_lifetime));
  with("POOL_MAX_IDLE_TIME", duration(config.max_idle_time));
  with("POOL_COMMAND_TIMEOUT", duration(config.command_timeout));
  with("POOL_ENABLE_LEAK_DETECTION", [&](const std::string& value, const std::string& variable) {
    config.enable_leak_detection = parse_bool(value, variable);
  });
  with("POOL_LEAK_DETECTION_TIMEOUT", duration(config.leak_detection_timeout));
  with("POOL_SHUTDOWN_TIMEOUT", duration(config.shutdown_timeout));
  with("POOL_VALIDATION_IDLE_THRESHOLD", duration(config.validation_idle_threshold));
  with("POOL_PROBE_IDLE_THRESHOLD", duration(config.probe_idle_threshold));
  with("POOL_QUEUE_POLICY", [&](const std::string& value, const std::string& variable) {
    config.queue_policy = parse_queue_policy(value, variable);
  });
  with("POOL_BARGING_WAIT_BOUND", duration(config.barging_wait_bound));
  with("POOL_HEALTH_CHECK_INTERVAL", duration(config.health_check_interval));
  with("POOL_DEGRADED_WAIT_THRESHOLD", duration(config.degraded_wait_threshold));
  with("POOL_HEALTH_WINDOW", [&](const std::string& value, const std::string& variable) {
    config.health_window = parse_window(value, variable);
  });
  with("POOL_RECONNECT_BACKOFF", [&](const std::string& value, const std::string& variable) {
    config.reconnect_backoff = parse_duration_list(value, variable);
  });
  with("POOL_HEALTHY_HEADROOM", [&](const std::string& value, const std::string& variable) {
    config.healthy_headroom = parse_fraction(value, variable);
  });
  with("POOL_DEGRADED_HEADROOM", [&](const std::string& value, const std::string& variable) {
    config.degraded_headroom = parse_fraction(value, variable);
  });
  with("LOG_LEVEL", [&](const std::string& value, const std::string& variable) {
    config.log_level = parse_log_level(value, variable);
  });
  config.validate();
  return config;
}

PoolConfig PoolConfig::from_env() {
  return from_env([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace poolscope
