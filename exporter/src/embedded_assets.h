#pragma once

#include <span>
#include <string_view>

namespace poolscope::exporter {

/// One operations artefact compiled into the binary at build time.
struct EmbeddedAsset {
  std::string_view path;     ///< path in the source tree, e.g. "rules/codebase-mcp-pool.yml"
  bool available = false;    ///< false when the file did not exist when the binary was built
  std::string_view content;  ///< the file's bytes (empty when not available)
};

/// Every embedded artefact (rules, Alertmanager configuration, dashboard).
/// Immutable static data: safe from any thread.
std::span<const EmbeddedAsset> embedded_assets() noexcept;

/// The artefact built from `path`, or nullptr when no such path was embedded.
const EmbeddedAsset* find_embedded_asset(std::string_view path) noexcept;

}  // namespace poolscope::exporter
