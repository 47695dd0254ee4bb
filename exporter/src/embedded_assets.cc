#include "embedded_assets.h"

#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace poolscope::exporter {
namespace {

// The whole of one gzip member, or nothing.
bool inflate_gzip(std::string_view compressed, std::string& out) {
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 16) != Z_OK) return false;
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  stream.avail_in = static_cast<uInt>(compressed.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int result = inflate(&stream, Z_FINISH);
  const bool complete = result == Z_STREAM_END && stream.total_out == out.size();
  inflateEnd(&stream);
  return complete;
}

struct Inflated {
  std::vector<std::string> contents;
  std::vector<EmbeddedAsset> assets;

  Inflated() {
    const std::span<const detail::CompressedAsset> stored = detail::compressed_assets();
    contents.resize(stored.size());
    assets.reserve(stored.size());
    for (std::size_t i = 0; i < stored.size(); ++i) {
      const detail::CompressedAsset& asset = stored[i];
      if (asset.available) {
        contents[i].resize(asset.size);
        if (!inflate_gzip(asset.gzip, contents[i])) {
          // Only a broken build gets here; say so rather than print garbage.
          std::fprintf(stderr, "poolscope-exporter: embedded %.*s is corrupt\n",
                       static_cast<int>(asset.path.size()), asset.path.data());
          std::abort();
        }
      }
      assets.push_back(EmbeddedAsset{asset.path, asset.available, contents[i]});
    }
  }
};

}  // namespace

std::span<const EmbeddedAsset> embedded_assets() noexcept {
  static const Inflated inflated;
  return inflated.assets;
}

const EmbeddedAsset* find_embedded_asset(std::string_view path) noexcept {
  for (const EmbeddedAsset& asset : embedded_assets()) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

}  // namespace poolscope::exporter
