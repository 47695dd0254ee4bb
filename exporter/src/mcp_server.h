#pragma once

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

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
/// With Actions, it also offers two tools, `pool_resize` (arguments
/// `max_size` and/or `min_size`) and `pool_drain` (no arguments), and
/// declares the tools capability; without them tools/list and tools/call are
/// unknown methods. Arguments are checked against each tool's input schema
/// before an action runs; a bad argument or a refused action is a tool result
/// with isError true and a message saying what was wrong, an unknown tool name
/// is Invalid params.
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

  /// Thrown by an Actions callback to refuse the action; the message goes to
  /// the client as the tool's error text, so it must hold no secret. Any other
  /// exception is reported as an internal error without its text.
  struct ActionError : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

  /// Actions that change the pool. Both or neither (the tools exist only
  /// with them); called on the request path.
  struct Actions {
    /// Sets max_size and/or min_size (at least one is given, each within
    /// 0..10000, max_size at least 1, min_size <= max_size when both are) and
    /// returns the result document, e.g. {"min_size": 2, "max_size": 20}.
    std::function<nlohmann::json(std::optional<std::size_t> max_size,
                                 std::optional<std::size_t> min_size)>
        resize;
    /// Recycles every connection; returns the result document.
    std::function<nlohmann::json()> drain;
  };

  /// Name of the resize tool.
  static constexpr std::string_view kResizeTool = "pool_resize";
  /// Name of the drain tool.
  static constexpr std::string_view kDrainTool = "pool_drain";

  /// URI of the health resource.
  static constexpr std::string_view kHealthUri = "health://connection-pool";
  /// URI of the statistics resource.
  static constexpr std::string_view kStatisticsUri = "stats://connection-pool";

  /// Protocol revisions this server speaks, newest first.
  static std::span<const std::string_view> supported_protocol_versions() noexcept;
  /// True when `version` is one of supported_protocol_versions().
  static bool is_supported_protocol_version(std::string_view version) noexcept;

  /// `server_name` and `server_version` are reported as serverInfo in the
  /// initialize result. `actions` empty: no tools. Throws
  /// std::invalid_argument when a resource callback is empty or only one
  /// action is given.
  McpServer(Resources resources, std::string server_name, std::string server_version,
            Actions actions = {});

  /// True when the pool_resize and pool_drain tools are offered.
  bool has_tools() const noexcept { return static_cast<bool>(actions_.resize); }

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
  nlohmann::json call_tool(const nlohmann::json* params) const;
  nlohmann::json resize(const nlohmann::json& arguments) const;

  Resources resources_;  // immutable after construction
  Actions actions_;      // immutable after construction
  std::string server_name_;
  std::string server_version_;
  nlohmann::json resource_list_;  // the resources/list result, built once
  nlohmann::json tool_list_;      // the tools/list result, built once
};

}  // namespace poolscope::exporter
