#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "http_response.h"

namespace poolscope::exporter {

/// The MCP (Model Context Protocol) endpoint: JSON-RPC 2.0 over the
/// Streamable HTTP transport, without the HTTP server itself.
///
/// The HTTP layer hands every request for `/mcp` to handle() and writes the
/// returned HttpResponse. The server is stateless: it issues no
/// `Mcp-Session-Id`, keeps nothing between requests and offers no
/// server-to-client stream (GET answers 405). It serves two read-only
/// resources, `health://connection-pool` (the /health document) and
/// `stats://connection-pool` (the full pool statistics), both produced by the
/// Resources callbacks at read time; nothing here touches the database.
///
/// JSON-RPC batches (a JSON array body) are answered with one Invalid Request
/// error: protocol revision 2025-06-18 removed batching, and the older
/// revisions we still negotiate are only offered by clients that never batch
/// over this transport.
///
/// Checks that need other request headers stay in the HTTP layer: `Origin`
/// (403 for an unexpected one) and `MCP-Protocol-Version` (400 for a value
/// is_supported_protocol_version() rejects).
///
/// Thread-safe: handle() may run on any number of threads at once, provided
/// the Resources callbacks are themselves safe to call concurrently.
class McpServer {
 public:
  /// Where the resource documents come from. Both are called on the request
  /// path, once per read, so they must be cheap (a snapshot, no I/O) and must
  /// never put a secret such as the database password into the document.
  struct Resources {
    std::function<nlohmann::json()> health;      ///< the /health JSON document
    std::function<nlohmann::json()> statistics;  ///< the full statistics document
  };

  /// URI of the health resource.
  static constexpr std::string_view kHealthUri = "health://connection-pool";
  /// URI of the statistics resource.
  static constexpr std::string_view kStatisticsUri = "stats://connection-pool";

  /// Protocol revisions this server speaks, newest first.
  static std::span<const std::string_view> supported_protocol_versions() noexcept;
  /// True when `version` is one of supported_protocol_versions().
  static bool is_supported_protocol_version(std::string_view version) noexcept;

  /// `server_name` and `server_version` are reported as serverInfo in the
  /// initialize result. Throws std::invalid_argument when a callback is empty.
  McpServer(Resources resources, std::string server_name, std::string server_version);

  /// Answers one HTTP request to the MCP endpoint.
  ///
  /// `http_method` is the request method ("POST", "GET", ...), `accept` the
  /// Accept header value (empty when absent), `body` the request body (the
  /// HTTP layer bounds its size). Every JSON-RPC error travels with HTTP 200;
  /// notifications and client responses get 202 with no body; methods other
  /// than POST get 405 with `Allow: POST`; a POST whose Accept admits neither
  /// JSON nor an event stream gets 406. Never throws on any input.
  HttpResponse handle(std::string_view http_method, std::string_view accept,
                      std::string_view body) const;

 private:
  nlohmann::json dispatch(std::string_view method, const nlohmann::json* params) const;
  nlohmann::json initialize(const nlohmann::json* params) const;
  nlohmann::json list_resources(const nlohmann::json* params) const;
  nlohmann::json read_resource(const nlohmann::json* params) const;

  Resources resources_;  // immutable after construction
  std::string server_name_;
  std::string server_version_;
  nlohmann::json resource_list_;  // the resources/list result, built once
};

}  // namespace poolscope::exporter
