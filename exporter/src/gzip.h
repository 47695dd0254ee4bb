#pragma once

#include <string>
#include <string_view>

namespace poolscope::exporter {

/// `data` compressed in gzip format (RFC 1952). Throws std::runtime_error
/// when zlib fails (out of memory). Thread-safe.
std::string gzip_compress(std::string_view data);

/// True when an Accept-Encoding header value admits gzip: it lists "gzip"
/// (or "x-gzip", or "*" without excluding gzip) with a non-zero q-value.
/// Pure function.
bool accepts_gzip(std::string_view accept_encoding) noexcept;

}  // namespace poolscope::exporter
