#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "poolscope/logging.h"
#include "poolscope/pool_config.h"

namespace poolscope::exporter {

/// Configures both the pool's logging (poolscope::configure_logging) and the
/// exporter's own lines, which use the same format with component
/// "exporter". Call once at start-up before other threads log.
void configure_exporter_logging(LogLevel level, LogFormat format);

/// Writes one exporter log line to stderr in the configured format:
/// {"timestamp","level","component":"exporter","message","context"} for JSON,
/// "<timestamp> <LEVEL> exporter: <message> key=value…" for text. Lines below
/// the configured level are dropped. Thread-safe; never throws.
void log_event(LogLevel level, std::string_view message,
               const nlohmann::json& context = nlohmann::json::object()) noexcept;

}  // namespace poolscope::exporter
