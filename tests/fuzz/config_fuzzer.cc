// libFuzzer target for the configuration parsers: parse_duration, parse_size,
// parse_bool, parse_log_level and PoolConfig::from_env with a fuzzed
// environment. Every input must either parse to a value within the documented
// bounds or throw ConfigError naming the variable; anything else (another
// exception, a sanitizer report, a broken invariant) is a finding.
//
// Input: byte 0 picks the parser; the rest is the text. For from_env the rest
// is records separated by NUL bytes, each a variable index byte then a value.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "poolscope/error.h"
#include "poolscope/pool_config.h"

namespace {

using poolscope::ConfigError;

constexpr const char* kVariables[] = {
    "DATABASE_URL",
    "POOL_NAME",
    "POOL_MIN_SIZE",
    "POOL_MAX_SIZE",
    "POOL_ACQUIRE_TIMEOUT",
    "POOL_INIT_TIMEOUT",
    "POOL_MAX_CONNECTION_LIFETIME",
    "POOL_MAX_IDLE_TIME",
    "POOL_COMMAND_TIMEOUT",
    "POOL_ENABLE_LEAK_DETECTION",
    "POOL_LEAK_DETECTION_TIMEOUT",
    "POOL_SHUTDOWN_TIMEOUT",
    "POOL_VALIDATION_IDLE_THRESHOLD",
    "POOL_HEALTH_CHECK_INTERVAL",
    "POOL_HEALTHY_HEADROOM",
    "POOL_DEGRADED_HEADROOM",
    "LOG_LEVEL",
};
constexpr std::size_t kVariableCount = sizeof kVariables / sizeof kVariables[0];

[[noreturn]] void violated(const char* what, std::string_view input) {
  std::fprintf(stderr, "invariant violated: %s; input (%zu bytes): ", what, input.size());
  for (const unsigned char c : input) std::fprintf(stderr, "\\x%02x", c);
  std::fprintf(stderr, "\n");
  std::abort();
}

// A rejection must name the variable, in the message too.
void check_rejection(const ConfigError& error, const std::string& variable,
                     std::string_view input) {
  if (error.variable() != variable) violated("ConfigError names another variable", input);
  if (std::string_view(error.what()).find(variable) == std::string_view::npos) {
    violated("ConfigError message does not name the variable", input);
  }
}

void fuzz_duration(std::string_view text) {
  const std::string variable = "POOL_ACQUIRE_TIMEOUT";
  std::chrono::milliseconds parsed{};
  try {
    parsed = poolscope::parse_duration(text, variable);
  } catch (const ConfigError& error) {
    check_rejection(error, variable, text);
    return;
  }
  if (parsed.count() < 0) violated("negative duration accepted", text);
  if (parsed > std::chrono::hours(24 * 365)) violated("duration above one year accepted", text);
  // What was accepted prints and parses back to the same value.
  const std::string again = std::to_string(parsed.count()) + "ms";
  try {
    if (poolscope::parse_duration(again, variable) != parsed)
      violated("duration round trip differs", text);
  } catch (const ConfigError&) {
    violated("an accepted duration does not parse back", text);
  }
}

void fuzz_size(std::string_view text) {
  const std::string variable = "POOL_MAX_SIZE";
  std::size_t parsed = 0;
  try {
    parsed = poolscope::parse_size(text, variable);
  } catch (const ConfigError& error) {
    check_rejection(error, variable, text);
    return;
  }
  if (poolscope::parse_size(std::to_string(parsed), variable) != parsed) {
    violated("size round trip differs", text);
  }
}

void fuzz_words(std::string_view text) {
  try {
    poolscope::parse_bool(text, "POOL_ENABLE_LEAK_DETECTION");
  } catch (const ConfigError& error) {
    check_rejection(error, "POOL_ENABLE_LEAK_DETECTION", text);
  }
  try {
    const auto level = poolscope::parse_log_level(text, "LOG_LEVEL");
    if (poolscope::parse_log_level(poolscope::to_string(level), "LOG_LEVEL") != level) {
      violated("log level round trip differs", text);
    }
  } catch (const ConfigError& error) {
    check_rejection(error, "LOG_LEVEL", text);
  }
}

void fuzz_environment(std::string_view input) {
  std::map<std::string, std::string> environment;
  std::string_view rest = input;
  while (!rest.empty()) {
    const std::size_t end = rest.find('\0');
    const std::string_view record = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    if (record.empty()) continue;
    const auto index = static_cast<unsigned char>(record[0]) % kVariableCount;
    environment[kVariables[index]] = std::string(record.substr(1));
  }
  const auto getenv = [&](const std::string& name) -> std::optional<std::string> {
    const auto found = environment.find(name);
    if (found == environment.end()) return std::nullopt;
    return found->second;
  };
  poolscope::PoolConfig config;
  try {
    config = poolscope::PoolConfig::from_env(getenv);
  } catch (const ConfigError& error) {
    bool known = false;
    for (const char* variable : kVariables) known = known || error.variable() == variable;
    if (!known) violated("from_env rejected a variable it does not read", input);
    if (std::string_view(error.what()).find(error.variable()) == std::string_view::npos) {
      violated("from_env's message does not name the variable", input);
    }
    return;
  }
  // Whatever from_env accepts is a configuration a pool can run with.
  try {
    config.validate();
  } catch (const ConfigError&) {
    violated("from_env returned a configuration that does not validate", input);
  }
  if (config.max_size < 1 || config.min_size > config.max_size)
    violated("sizes out of order", input);
  if (config.acquire_timeout.count() <= 0 || config.command_timeout.count() < 0) {
    violated("timeouts out of range", input);
  }
  if (!(config.degraded_headroom <= config.healthy_headroom))
    violated("headrooms out of order", input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      fuzz_duration(text);
      break;
    case 1:
      fuzz_size(text);
      break;
    case 2:
      fuzz_words(text);
      break;
    case 3:
      fuzz_environment(text);
      break;
  }
  return 0;
}
