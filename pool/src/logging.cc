#include "poolscope/logging.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <mutex>

#include "log.h"
#include "poolscope/error.h"

namespace poolscope {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kJson};

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarning:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
    case LogLevel::kCritical:
      return spdlog::level::critical;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> logger() {
  // The pattern is the bare message: poolscope formats whole lines itself so
  // that JSON and text output carry the same fields.
  static const std::shared_ptr<spdlog::logger> instance = [] {
    auto existing = spdlog::get("poolscope");
    if (existing) return existing;
    auto created = std::make_shared<spdlog::logger>(
        "poolscope", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    created->set_pattern("%v");
    created->set_level(spdlog::level::trace);
    created->flush_on(spdlog::level::trace);
    return created;
  }();
  return instance;
}

std::string timestamp_now() {
  const auto now = std::chrono::system_clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", std::chrono::floor<std::chrono::seconds>(now),
                     ms.count());
}

std::string text_value(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

void configure_logging(LogLevel level, LogFormat format) {
  g_level.store(level);
  g_format.store(format);
  logger();
}

LogFormat parse_log_format(const std::string& text, const std::string& variable) {
  if (text == "json") return LogFormat::kJson;
  if (text == "text" || text == "logfmt") return LogFormat::kText;
  throw ConfigError(variable, text, "expected json or text");
}

bool log_enabled(LogLevel level) noexcept {
  return level >= g_level.load(std::memory_order_relaxed);
}

void log_event(LogLevel level, std::string_view component, std::string_view message,
               const nlohmann::json& context) noexcept {
  if (!log_enabled(level)) return;
  try {
    std::string line;
    if (g_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
      nlohmann::json entry = {
          {"timestamp", timestamp_now()},
          {"level", std::string(to_string(level))},
          {"component", std::string(component)},
          {"message", std::string(message)},
          {"context", context.is_object() ? context : nlohmann::json::object()},
      };
      line = entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      line = fmt::format("{} {} {}: {}", timestamp_now(), to_string(level), component, message);
      if (context.is_object()) {
        for (const auto& [key, value] : context.items()) {
          line += fmt::format(" {}={}", key, text_value(value));
        }
      }
    }
    logger()->log(to_spdlog(level), line);
  } catch (...) {
    // Logging must never take the program down (out of memory, a bad sink).
  }
}

namespace detail {

void log(LogLevel level, std::string_view message, const nlohmann::json& context) {
  log_event(level, "connection_pool", message, context);
}

}  // namespace detail
}  // namespace poolscope
