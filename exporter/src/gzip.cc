#include "gzip.h"

#include <zlib.h>

#include <cctype>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>

namespace poolscope::exporter {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  return text;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// q-value of one Accept-Encoding element ("gzip;q=0.5"); 1 when absent,
// 0 when malformed (a client that sends garbage gets the identity encoding).
double q_value(std::string_view parameters) {
  while (!parameters.empty()) {
    const std::size_t semicolon = parameters.find(';');
    const std::string_view parameter = trim(parameters.substr(0, semicolon));
    parameters =
        semicolon == std::string_view::npos ? std::string_view{} : parameters.substr(semicolon + 1);
    if (parameter.size() >= 2 && (parameter[0] == 'q' || parameter[0] == 'Q') &&
        parameter[1] == '=') {
      const std::string value(trim(parameter.substr(2)));
      char* end = nullptr;
      const double q = std::strtod(value.c_str(), &end);
      if (value.empty() || end != value.c_str() + value.size() || !(q >= 0.0 && q <= 1.0)) {
        return 0.0;
      }
      return q;
    }
  }
  return 1.0;
}

}  // namespace

bool accepts_gzip(std::string_view accept_encoding) noexcept {
  double gzip_q = -1.0;  // -1: not listed
  double any_q = -1.0;
  while (!accept_encoding.empty()) {
    const std::size_t comma = accept_encoding.find(',');
    const std::string_view element = accept_encoding.substr(0, comma);
    accept_encoding =
        comma == std::string_view::npos ? std::string_view{} : accept_encoding.substr(comma + 1);
    const std::size_t semicolon = element.find(';');
    const std::string_view coding = trim(element.substr(0, semicolon));
    const std::string_view parameters =
        semicolon == std::string_view::npos ? std::string_view{} : element.substr(semicolon + 1);
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip_q = q_value(parameters);
    } else if (coding == "*") {
      any_q = q_value(parameters);
    }
  }
  if (gzip_q >= 0.0) return gzip_q > 0.0;
  return any_q > 0.0;
}

std::string gzip_compress(std::string_view data) {
  z_stream stream{};
  // Level 1 because scrapes are frequent and the text format compresses well
  // even at the fastest level; + 16 on windowBits selects the gzip wrapper.
  //
  // The deflate state is sized to the input instead of zlib's defaults
  // (windowBits 15, memLevel 8: 256 KiB allocated and half of it written for
  // every response, which left each HTTP thread's malloc arena 40 KiB
  // bigger and made a gzip scrape 7x slower than a plain one here). A window
  // at least as large as the input plus deflate's look-ahead finds every
  // match the 32 KiB window would, so the output is the same; memLevel 6
  // (16 KiB hash, 16 KiB symbol buffer) compressed a 10 KB metrics page to
  // the same size as memLevel 8. A 10 KB page now needs 96 KiB of state.
  constexpr std::size_t kLookahead = 262;  // zlib's MIN_LOOKAHEAD
  int window_bits = 9;                     // zlib's smallest window for deflate
  while (window_bits < 15 && (std::size_t{1} << window_bits) < data.size() + kLookahead) {
    ++window_bits;
  }
  constexpr int kMemLevel = 6;
  if (deflateInit2(&stream, 1, Z_DEFLATED, window_bits + 16, kMemLevel, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    throw std::runtime_error("gzip: deflateInit2 failed");
  }
  std::string output;
  output.resize(deflateBound(&stream, static_cast<uLong>(data.size())));
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(output.data());
  stream.avail_out = static_cast<uInt>(output.size());
  const int result = deflate(&stream, Z_FINISH);
  const std::size_t produced = stream.total_out;
  deflateEnd(&stream);
  if (result != Z_STREAM_END) throw std::runtime_error("gzip: deflate failed");
  output.resize(produced);
  return output;
}

}  // namespace poolscope::exporter
