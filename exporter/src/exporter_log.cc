#include "exporter_log.h"

namespace poolscope::exporter {

// One format and one stream for the pool's lines and the exporter's: the
// pool's logger writes both, with component "exporter" for these.
void configure_exporter_logging(LogLevel level, LogFormat format) {
  configure_logging(level, format);
}

void log_event(LogLevel level, std::string_view message, const nlohmann::json& context) noexcept {
  poolscope::log_event(level, "exporter", message, context);
}

}  // namespace poolscope::exporter
