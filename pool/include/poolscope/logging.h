#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "poolscope/pool_config.h"

namespace poolscope {

/// How log lines look.
enum class LogFormat {
  kJson,  ///< {"timestamp","level","component","message","context"} per line (default)
  kText,  ///< "2025-10-13T14:30:00.000Z INFO connection_pool: message key=value"
};

/// Configures poolscope's logger (spdlog logger "poolscope", to stderr).
/// Call once at start-up, before pools are created; not thread-safe against
/// concurrent logging.
void configure_logging(LogLevel level, LogFormat format = LogFormat::kJson);

/// Writes one line in poolscope's format for `component` ("connection_pool"
/// for the pool's own lines), so a program embedding the pool can share its
/// log stream and format. `context` should be a JSON object. Lines below the
/// configured level are dropped. Thread-safe; never throws.
void log_event(LogLevel level, std::string_view component, std::string_view message,
               const nlohmann::json& context) noexcept;

/// True when a line at `level` would be written.
bool log_enabled(LogLevel level) noexcept;

/// Parses "json" or "text"; throws ConfigError naming `variable`.
LogFormat parse_log_format(const std::string& text, const std::string& variable);

}  // namespace poolscope
