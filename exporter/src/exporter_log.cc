#include "exporter_log.h"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <memory>

#include "health_document.h"

namespace poolscope::exporter {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kJson};

// The pool's logger is internal to the library, so the exporter keeps its own
// spdlog logger on the same stream; both write whole lines, so they never
// interleave within a line.
spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> instance = [] {
    auto created = std::make_shared<spdlog::logger>(
        "poolscope-exporter", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    created->set_pattern("%v");
    created->set_level(spdlog::level::trace);
    created->flush_on(spdlog::level::trace);
    return created;
  }();
  return *instance;
}

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

}  // namespace

void configure_exporter_logging(LogLevel level, LogFormat format) {
  configure_logging(level, format);
  g_level.store(level);
  g_format.store(format);
  logger();
}

void log_event(LogLevel level, std::string_view message, const nlohmann::json& context) noexcept {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  try {
    const std::string timestamp = iso8601_utc(std::chrono::system_clock::now());
    std::string line;
    if (g_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
      const nlohmann::json entry = {
          {"timestamp", timestamp},
          {"level", std::string(to_string(level))},
          {"component", "exporter"},
          {"message", std::string(message)},
          {"context", context.is_object() ? context : nlohmann::json::object()},
      };
      line = entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      line = fmt::format("{} {} exporter: {}", timestamp, to_string(level), message);
      if (context.is_object()) {
        for (const auto& [key, value] : context.items()) {
          line += fmt::format(
              " {}={}", key,
              value.is_string()
                  ? value.get<std::string>()
                  : value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        }
      }
    }
    logger().log(to_spdlog(level), line);
  } catch (...) {
    // Logging must never take the exporter down (e.g. out of memory).
  }
}

}  // namespace poolscope::exporter
