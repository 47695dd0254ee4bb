#pragma once

#include <string>
#include <utility>
#include <vector>

namespace poolscope::exporter {

/// One HTTP response as the endpoint handlers produce it; the HTTP server
/// writes it to the wire. A plain value: no thread-safety concerns.
struct HttpResponse {
  int status = 200;          ///< HTTP status code
  std::string content_type;  ///< Content-Type header; empty when there is no body
  std::string body;          ///< response body, sent as is
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers (name, value)
};

}  // namespace poolscope::exporter
