#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "poolscope/pool_config.h"

namespace poolscope::detail {

/// True when a line at `level` would be written (check before building context).
bool log_enabled(LogLevel level) noexcept;

/// Writes one log line: {timestamp, level, component, message, context}.
/// Thread-safe.
void log(LogLevel level, std::string_view message, const nlohmann::json& context = nlohmann::json::object());

}  // namespace poolscope::detail
