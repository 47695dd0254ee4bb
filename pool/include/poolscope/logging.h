#pragma once

#include <string>

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

/// Parses "json" or "text"; throws ConfigError naming `variable`.
LogFormat parse_log_format(const std::string& text, const std::string& variable);

}  // namespace poolscope
