#include "embedded_assets.h"

namespace poolscope::exporter {

const EmbeddedAsset* find_embedded_asset(std::string_view path) noexcept {
  for (const EmbeddedAsset& asset : embedded_assets()) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

}  // namespace poolscope::exporter
