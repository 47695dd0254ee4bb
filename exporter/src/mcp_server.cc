#include "mcp_server.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <exception>
#include <optional>
#include <stdexcept>
#include <utility>

namespace poolscope::exporter {
namespace {

using nlohmann::json;

// Newest first: initialize answers with the first entry when the client asks
// for a revision we do not know.
constexpr std::array<std::string_view, 4> kProtocolVersions = {"2025-11-25", "2025-06-18",
                                                               "2025-03-26", "2024-11-05"};

// JSON-RPC 2.0 error codes, plus MCP's resource-not-found.
constexpr int kParseError = -32700;
constexpr int kInvalidRequest = -32600;
constexpr int kMethodNotFound = -32601;
constexpr int kInvalidParams = -32602;
constexpr int kInternalError = -32603;
constexpr int kResourceNotFound = -32002;

// MCP messages are a few levels deep; anything far deeper is hostile or
// broken. The parser itself is iterative, but copies, comparisons and dumps of
// a json value recurse, so such a document never gets past parsing.
constexpr int kMaxNestingDepth = 64;

constexpr std::string_view kServerInstructions =
    "Read health://connection-pool for the PostgreSQL connection pool's health "
    "(the same document as the exporter's /health endpoint) and "
    "stats://connection-pool for its full statistics. Both are served from the "
    "pool's cached state; reading them never queries the database.";

constexpr std::string_view kToolInstructions =
    " The tools pool_resize (max_size and/or min_size) and pool_drain (recycle "
    "every connection, e.g. after a password rotation or failover) change the "
    "running pool; neither interrupts a connection in use.";

// Largest pool size the tools accept (the pool's own bound).
constexpr std::int64_t kMaxToolPoolSize = 10000;

// Thrown by method handlers; turned into a JSON-RPC error response.
struct RpcError {
  int code;
  std::string message;
  json data = nullptr;  // omitted from the response when null
};

// Client input is valid UTF-8 (the parser rejects anything else), but the
// resource documents are built from server state such as libpq error texts,
// which need not be: replace bad bytes instead of throwing.
std::string serialize(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse json_response(int status, const json& message) {
  HttpResponse response;
  response.status = status;
  response.content_type = "application/json";
  response.body = serialize(message);
  return response;
}

HttpResponse status_only(int status) {
  HttpResponse response;
  response.status = status;
  return response;
}

json error_message(const json& id, int code, std::string_view message, const json& data = nullptr) {
  json error = {{"code", code}, {"message", message}};
  if (!data.is_null()) error["data"] = data;
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(error)}};
}

// ---- Accept header ---------------------------------------------------------

enum class ReplyFormat { kJson, kEventStream, kNotAcceptable };

std::string_view trim(std::string_view text) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t'; };
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

bool iequals(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

// A media range's quality: 1 unless a `q` parameter says otherwise. A value
// that does not parse counts as 1 (lenient: the client did list the type).
double quality(std::string_view parameters) {
  while (!parameters.empty()) {
    const auto semicolon = parameters.find(';');
    const std::string_view parameter = trim(parameters.substr(0, semicolon));
    parameters =
        semicolon == std::string_view::npos ? std::string_view{} : parameters.substr(semicolon + 1);
    if (parameter.size() < 2 || (parameter[0] != 'q' && parameter[0] != 'Q') ||
        parameter[1] != '=') {
      continue;
    }
    const std::string_view number = trim(parameter.substr(2));
    double value = 1.0;
    const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (error == std::errc{} && end == number.data() + number.size()) return value;
    return 1.0;
  }
  return 1.0;
}

// The spec has clients list both application/json and text/event-stream. We
// answer with JSON whenever the client takes it (also for a missing Accept
// header or */*, so curl works), with a one-event SSE stream when it only
// takes event streams, and 406 otherwise.
ReplyFormat negotiate(std::string_view accept) {
  if (trim(accept).empty()) return ReplyFormat::kJson;
  bool json_ok = false;
  bool event_stream_ok = false;
  while (!accept.empty()) {
    const auto comma = accept.find(',');
    const std::string_view range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    const auto semicolon = range.find(';');
    const std::string_view type = trim(range.substr(0, semicolon));
    if (semicolon != std::string_view::npos && quality(range.substr(semicolon + 1)) <= 0.0) {
      continue;
    }
    if (iequals(type, "application/json") || iequals(type, "application/*") ||
        iequals(type, "*/*")) {
      json_ok = true;
    } else if (iequals(type, "text/event-stream") || iequals(type, "text/*")) {
      event_stream_ok = true;
    }
  }
  if (json_ok) return ReplyFormat::kJson;
  if (event_stream_ok) return ReplyFormat::kEventStream;
  return ReplyFormat::kNotAcceptable;
}

HttpResponse reply(ReplyFormat format, const json& message) {
  if (format != ReplyFormat::kEventStream) return json_response(200, message);
  // One SSE event carrying the response, then the stream ends. A compact dump
  // holds no raw newline, so it fits on one data line.
  HttpResponse response;
  response.content_type = "text/event-stream";
  response.body = "event: message\ndata: " + serialize(message) + "\n\n";
  response.headers.emplace_back("Cache-Control", "no-cache");
  return response;
}

// ---- JSON-RPC message shape -----------------------------------------------

// Builds the DOM like json::parse, but aborts as soon as an object or array
// opens deeper than kMaxNestingDepth. nlohmann-json's parser callback cannot
// do this cheaply: with a callback it rescans the parent on every closed
// value, which made an array of 170k empty objects take 82 s. SAX events
// cost O(1) each, so parsing stays linear in the body size.
class DepthLimitedDomBuilder {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit DepthLimitedDomBuilder(json& result) : dom_(result, /*allow_exceptions=*/false) {}

  bool too_deep() const noexcept { return too_deep_; }

  bool null() { return dom_.null(); }
  bool boolean(bool value) { return dom_.boolean(value); }
  bool number_integer(number_integer_t value) { return dom_.number_integer(value); }
  bool number_unsigned(number_unsigned_t value) { return dom_.number_unsigned(value); }
  bool number_float(number_float_t value, const string_t& text) {
    return dom_.number_float(value, text);
  }
  bool string(string_t& value) { return dom_.string(value); }
  bool binary(binary_t& value) { return dom_.binary(value); }
  bool start_object(std::size_t elements) { return enter() && dom_.start_object(elements); }
  bool key(string_t& value) { return dom_.key(value); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t elements) { return enter() && dom_.start_array(elements); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& token,
                   const nlohmann::detail::exception& error) {
    return dom_.parse_error(position, token, error);
  }

 private:
  bool enter() {
    if (++depth_ > kMaxNestingDepth) {
      too_deep_ = true;
      return false;
    }
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  int depth_ = 0;
  bool too_deep_ = false;
};

std::optional<json> parse_bounded(std::string_view body) {
  json message;
  DepthLimitedDomBuilder builder(message);
  const bool parsed = json::sax_parse(body.begin(), body.end(), &builder,
                                      json::input_format_t::json, /*strict=*/true);
  if (builder.too_deep())
    throw RpcError{kInvalidRequest, "Invalid Request: JSON nested too deeply"};
  if (!parsed || message.is_discarded()) return std::nullopt;
  return message;
}

// MCP narrows JSON-RPC's id to a string or an integer (never null).
bool is_valid_id(const json& id) { return id.is_string() || id.is_number_integer(); }

const json* member(const json& object, std::string_view key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// Params of an MCP request are an object or absent. JSON-RPC allows an array,
// which no MCP method takes (bad params); any other type is not a request.
void check_params(const json* params) {
  if (params == nullptr || params->is_object()) return;
  if (params->is_array())
    throw RpcError{kInvalidParams, "Invalid params: params must be an object"};
  throw RpcError{kInvalidRequest, "Invalid Request: params must be an object"};
}

const json* optional_member(const json* params, std::string_view key) {
  return params == nullptr ? nullptr : member(*params, key);
}

// A tool result the client shows to the model: the text, and for success the
// same document as structured content.
json tool_result(const json& document) {
  return {{"content", json::array({{{"type", "text"}, {"text", serialize(document)}}})},
          {"structuredContent", document},
          {"isError", false}};
}

json tool_error(std::string_view message) {
  return {{"content", json::array({{{"type", "text"}, {"text", message}}})}, {"isError", true}};
}

// A refused tool call: reported as a tool result (isError), not a protocol
// error, so that the caller sees what to change.
struct ToolRefusal {
  std::string message;
};

json size_schema(std::int64_t minimum, std::string_view description) {
  return {{"type", "integer"},
          {"minimum", minimum},
          {"maximum", kMaxToolPoolSize},
          {"description", description}};
}

std::size_t size_argument(const json& value, std::string_view name, std::int64_t minimum) {
  const bool whole = value.is_number_unsigned() || value.is_number_integer();
  if (!whole || value.get<std::int64_t>() < minimum ||
      value.get<std::int64_t>() > kMaxToolPoolSize) {
    throw ToolRefusal{"Invalid arguments: " + std::string(name) + " must be a whole number from " +
                      std::to_string(minimum) + " to " + std::to_string(kMaxToolPoolSize) +
                      ", got " + serialize(value)};
  }
  return value.get<std::size_t>();
}

}  // namespace

std::span<const std::string_view> McpServer::supported_protocol_versions() noexcept {
  return kProtocolVersions;
}

bool McpServer::is_supported_protocol_version(std::string_view version) noexcept {
  return std::ranges::find(kProtocolVersions, version) != kProtocolVersions.end();
}

McpServer::McpServer(Resources resources, std::string server_name, std::string server_version,
                     Actions actions)
    : resources_(std::move(resources)),
      actions_(std::move(actions)),
      server_name_(std::move(server_name)),
      server_version_(std::move(server_version)) {
  if (!resources_.health || !resources_.statistics) {
    throw std::invalid_argument("McpServer needs both a health and a statistics callback");
  }
  if (static_cast<bool>(actions_.resize) != static_cast<bool>(actions_.drain)) {
    throw std::invalid_argument("McpServer needs both the resize and the drain action, or neither");
  }
  tool_list_ = {
      {"tools",
       json::array({
           {{"name", kResizeTool},
            {"title", "Resize the connection pool"},
            {"description",
             "Changes the pool's max_size and/or min_size at run time, without a restart. "
             "Shrinking never closes a connection in use: surplus connections close as they "
             "come back. Growing serves queued requests with new connections at once. "
             "Returns the sizes now in force."},
            {"inputSchema",
             {{"type", "object"},
              {"properties",
               {{"max_size", size_schema(1, "New maximum number of connections")},
                {"min_size", size_schema(0, "New number of connections kept open when idle")}}},
              {"minProperties", 1},
              {"additionalProperties", false}}},
            {"annotations",
             {{"readOnlyHint", false},
              {"destructiveHint", false},
              {"idempotentHint", true},
              {"openWorldHint", false}}}},
           {{"name", kDrainTool},
            {"title", "Drain the connection pool"},
            {"description",
             "Recycles every connection gracefully (after a password rotation or a failover): "
             "idle connections are closed and replaced now, connections in use are replaced "
             "when they come back. Returns how many of each."},
            {"inputSchema",
             {{"type", "object"}, {"properties", json::object()}, {"additionalProperties", false}}},
            {"annotations",
             {{"readOnlyHint", false},
              {"destructiveHint", false},
              {"idempotentHint", false},
              {"openWorldHint", false}}}},
       })}};
  resource_list_ = {
      {"resources",
       json::array({
           {{"uri", kHealthUri},
            {"name", "connection-pool-health"},
            {"title", "Connection pool health"},
            {"description",
             "Health of the PostgreSQL connection pool: status (healthy, degraded, "
             "unhealthy), database status, pool counts (total, idle, active, waiting), "
             "validation latency, last error and uptime. Same document as GET /health."},
            {"mimeType", "application/json"}},
           {{"uri", kStatisticsUri},
            {"name", "connection-pool-statistics"},
            {"title", "Connection pool statistics"},
            {"description",
             "Full statistics snapshot of the PostgreSQL connection pool: sizes, "
             "acquisition and wait times, peaks, lifetime counters, errors by type "
             "and the lifecycle state."},
            {"mimeType", "application/json"}},
       })}};
}

HttpResponse McpServer::handle(std::string_view http_method, std::string_view accept,
                               std::string_view body) const {
  try {
    if (http_method != "POST") {
      // No server-to-client stream (GET) and no sessions to end (DELETE).
      HttpResponse response =
          json_response(405, error_message(nullptr, kInvalidRequest,
                                           "Method Not Allowed: send JSON-RPC messages with POST"));
      response.headers.emplace_back("Allow", "POST");
      return response;
    }
    const ReplyFormat format = negotiate(accept);
    if (format == ReplyFormat::kNotAcceptable) {
      return json_response(406,
                           error_message(nullptr, kInvalidRequest,
                                         "Not Acceptable: Accept must include application/json or "
                                         "text/event-stream"));
    }

    json id = nullptr;  // stays null until the message has shown a valid id
    try {
      const std::optional<json> parsed = parse_bounded(body);
      if (!parsed) return reply(format, error_message(nullptr, kParseError, "Parse error"));
      const json& message = *parsed;

      if (message.is_array()) {
        throw RpcError{kInvalidRequest,
                       "Invalid Request: JSON-RPC batches are not supported (removed in MCP "
                       "2025-06-18); send one message per POST"};
      }
      if (!message.is_object()) {
        throw RpcError{kInvalidRequest, "Invalid Request: expected a JSON-RPC object"};
      }
      const json* id_member = member(message, "id");
      if (id_member != nullptr && is_valid_id(*id_member)) id = *id_member;

      const json* version = member(message, "jsonrpc");
      if (version == nullptr || *version != "2.0") {
        throw RpcError{kInvalidRequest, "Invalid Request: jsonrpc must be \"2.0\""};
      }
      const json* method = member(message, "method");
      if (method == nullptr) {
        // A response to a server request. We never send any, so there is
        // nothing to match it with; accept and drop it.
        const bool looks_like_response = id_member != nullptr && is_valid_id(*id_member) &&
                                         (message.contains("result") || message.contains("error"));
        if (!looks_like_response) {
          throw RpcError{kInvalidRequest, "Invalid Request: method is missing"};
        }
        return status_only(202);
      }
      if (!method->is_string()) {
        throw RpcError{kInvalidRequest, "Invalid Request: method must be a string"};
      }
      const json* params = member(message, "params");
      if (id_member == nullptr) {
        // A notification: never answered, whatever its method (initialized,
        // cancelled, ...). Nothing we do depends on one.
        check_params(params);
        return status_only(202);
      }
      if (!is_valid_id(*id_member)) {
        throw RpcError{kInvalidRequest, "Invalid Request: id must be a string or an integer"};
      }
      check_params(params);
      json result = dispatch(method->get_ref<const std::string&>(), params);
      return reply(format, {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}});
    } catch (const RpcError& error) {
      return reply(format, error_message(id, error.code, error.message, error.data));
    } catch (const std::exception&) {
      // The exception text may carry server internals; the log is the place for those.
      return reply(format, error_message(id, kInternalError, "Internal error"));
    }
  } catch (...) {
    // Last resort (out of memory while building a reply): nothing left to
    // serialise with, so a bare status.
    return status_only(500);
  }
}

json McpServer::dispatch(std::string_view method, const json* params) const {
  if (method == "initialize") return initialize(params);
  if (method == "ping") return json::object();
  if (method == "resources/list") return list_resources(params);
  if (method == "resources/read") return read_resource(params);
  if (method == "resources/templates/list") {
    return {{"resourceTemplates", json::array()}};
  }
  if (has_tools() && method == "tools/list") {
    if (optional_member(params, "cursor") != nullptr) {
      throw RpcError{kInvalidParams, "Invalid params: unknown cursor"};
    }
    return tool_list_;
  }
  if (has_tools() && method == "tools/call") return call_tool(params);
  throw RpcError{kMethodNotFound, "Method not found", {{"method", method}}};
}

json McpServer::initialize(const json* params) const {
  const json* requested = optional_member(params, "protocolVersion");
  if (requested == nullptr || !requested->is_string()) {
    throw RpcError{kInvalidParams, "Invalid params: initialize needs a string protocolVersion"};
  }
  for (const std::string_view key : {"capabilities", "clientInfo"}) {
    const json* value = optional_member(params, key);
    if (value != nullptr && !value->is_object()) {
      throw RpcError{kInvalidParams, "Invalid params: " + std::string(key) + " must be an object"};
    }
  }
  // Answer with the client's revision when we speak it, else our newest; the
  // client then decides whether it can go on.
  const auto& asked = requested->get_ref<const std::string&>();
  const std::string_view agreed =
      is_supported_protocol_version(asked) ? std::string_view(asked) : kProtocolVersions.front();
  json capabilities = {{"resources", json::object()}};
  std::string instructions(kServerInstructions);
  if (has_tools()) {
    capabilities["tools"] = json::object();
    instructions += kToolInstructions;
  }
  return {{"protocolVersion", agreed},
          {"capabilities", std::move(capabilities)},
          {"serverInfo", {{"name", server_name_}, {"version", server_version_}}},
          {"instructions", std::move(instructions)}};
}

json McpServer::list_resources(const json* params) const {
  // Everything fits on one page, so no cursor we could have issued exists.
  if (const json* cursor = optional_member(params, "cursor"); cursor != nullptr) {
    throw RpcError{kInvalidParams, "Invalid params: unknown cursor"};
  }
  return resource_list_;
}

json McpServer::read_resource(const json* params) const {
  const json* uri = optional_member(params, "uri");
  if (uri == nullptr || !uri->is_string()) {
    throw RpcError{kInvalidParams, "Invalid params: resources/read needs a string uri"};
  }
  const auto& name = uri->get_ref<const std::string&>();
  json document;
  if (name == kHealthUri) {
    document = resources_.health();
  } else if (name == kStatisticsUri) {
    document = resources_.statistics();
  } else {
    throw RpcError{kResourceNotFound, "Resource not found", {{"uri", name}}};
  }
  return {{"contents", json::array({{{"uri", name},
                                     {"mimeType", "application/json"},
                                     {"text", serialize(document)}}})}};
}

json McpServer::call_tool(const json* params) const {
  const json* name = optional_member(params, "name");
  if (name == nullptr || !name->is_string()) {
    throw RpcError{kInvalidParams, "Invalid params: tools/call needs a string name"};
  }
  const auto& tool = name->get_ref<const std::string&>();
  if (tool != kResizeTool && tool != kDrainTool) {
    throw RpcError{kInvalidParams, "Invalid params: unknown tool", {{"name", tool}}};
  }
  const json* given = optional_member(params, "arguments");
  const json arguments = given == nullptr || given->is_null() ? json::object() : *given;
  try {
    if (!arguments.is_object()) {
      throw ToolRefusal{"Invalid arguments: arguments must be an object"};
    }
    if (tool == kResizeTool) return tool_result(resize(arguments));
    if (!arguments.empty()) {
      throw ToolRefusal{"Invalid arguments: pool_drain takes no arguments, got '" +
                        arguments.begin().key() + "'"};
    }
    return tool_result(actions_.drain());
  } catch (const ToolRefusal& refusal) {
    return tool_error(refusal.message);
  } catch (const ActionError& error) {
    return tool_error(error.what());
  }
}

json McpServer::resize(const json& arguments) const {
  for (const auto& [key, value] : arguments.items()) {
    if (key != "max_size" && key != "min_size") {
      throw ToolRefusal{"Invalid arguments: unknown argument '" + key +
                        "'; pool_resize takes max_size and min_size"};
    }
  }
  std::optional<std::size_t> max_size;
  std::optional<std::size_t> min_size;
  if (const json* value = member(arguments, "max_size")) {
    max_size = size_argument(*value, "max_size", 1);
  }
  if (const json* value = member(arguments, "min_size")) {
    min_size = size_argument(*value, "min_size", 0);
  }
  if (!max_size && !min_size) {
    throw ToolRefusal{"Invalid arguments: pool_resize needs max_size, min_size or both"};
  }
  if (max_size && min_size && *min_size > *max_size) {
    throw ToolRefusal{"Invalid arguments: min_size (" + std::to_string(*min_size) +
                      ") must not exceed max_size (" + std::to_string(*max_size) + ")"};
  }
  return actions_.resize(max_size, min_size);
}

}  // namespace poolscope::exporter
