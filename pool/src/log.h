#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "poolscope/logging.h"
#include "poolscope/pool_config.h"

namespace poolscope::detail {

/// Writes one pool log line: {timestamp, level, component, message, context}
/// with component "connection_pool". Thread-safe.
void log(LogLevel level, std::string_view message,
         const nlohmann::json& context = nlohmann::json::object());

}  // namespace poolscope::detail
