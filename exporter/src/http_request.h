#pragma once

#include <string>

namespace poolscope::exporter {

/// The parts of an HTTP request the endpoint handlers look at, copied out of
/// the HTTP server so handlers can be tested without sockets. A plain value:
/// no thread-safety concerns.
struct HttpRequest {
  std::string method;                ///< "GET", "POST", … as received
  std::string path;                  ///< URL-decoded path without the query string
  std::string host;                  ///< Host header ("" when absent)
  std::string accept;                ///< Accept header ("" when absent)
  std::string accept_encoding;       ///< Accept-Encoding header ("" when absent)
  std::string authorization;         ///< Authorization header ("" when absent)
  std::string origin;                ///< Origin header ("" when absent)
  std::string mcp_protocol_version;  ///< MCP-Protocol-Version header ("" when absent)
  std::string remote_address;        ///< the client's IP address ("" when unknown)
  std::string body;                  ///< request body (bounded by the server)
};

}  // namespace poolscope::exporter
