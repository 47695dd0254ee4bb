#include "http_server.h"

#include <civetweb.h>
#include <fmt/format.h>

#include <cctype>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "exporter_log.h"

namespace poolscope::exporter {
namespace {

// civetweb reports start-up failures (such as "cannot bind") only through the
// log callback, on the thread that calls mg_start.
thread_local std::string t_start_error;
thread_local bool t_starting = false;

std::string header(const mg_connection* connection, const char* name) {
  const char* value = mg_get_header(connection, name);
  return value != nullptr ? std::string(value) : std::string();
}

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    std::string_view element = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    while (!element.empty() && std::isspace(static_cast<unsigned char>(element.front()))) {
      element.remove_prefix(1);
    }
    while (!element.empty() && std::isspace(static_cast<unsigned char>(element.back()))) {
      element.remove_suffix(1);
    }
    if (element.size() != token.size()) continue;
    bool equal = true;
    for (std::size_t i = 0; i < token.size() && equal; ++i) {
      equal = std::tolower(static_cast<unsigned char>(element[i])) == token[i];
    }
    if (equal) return true;
  }
  return false;
}

// Whether civetweb will keep this connection open after the response; the
// Connection header we send must say the same. Mirrors civetweb's own rule
// (it also closes after every 401).
bool keeps_alive(const mg_connection* connection, const mg_request_info* info, int status) {
  if (status == 401) return false;
  const char* connection_header = mg_get_header(connection, "Connection");
  if (connection_header != nullptr) return has_token(connection_header, "keep-alive");
  return info->http_version != nullptr && std::string_view(info->http_version) == "1.1";
}

void write_response(mg_connection* connection, const mg_request_info* info,
                    const HttpResponse& response, bool head_only, bool force_close) {
  const bool keep_alive = !force_close && keeps_alive(connection, info, response.status);
  if (!keep_alive) mg_disable_connection_keep_alive(connection);
  const char* version = info->http_version != nullptr ? info->http_version : "1.1";
  std::string message = fmt::format("HTTP/{} {} {}\r\n", version, response.status,
                                    mg_get_response_code_text(connection, response.status));
  if (!response.content_type.empty()) {
    message += fmt::format("Content-Type: {}\r\n", response.content_type);
  }
  // 204 and 304 carry no body and no Content-Length.
  if (response.status != 204 && response.status != 304) {
    message += fmt::format("Content-Length: {}\r\n", response.body.size());
  }
  for (const auto& [name, value] : response.headers) {
    message += fmt::format("{}: {}\r\n", name, value);
  }
  message += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  if (!head_only && response.status != 204 && response.status != 304) {
    message += response.body;
  }
  // One write: headers and body leave in as few segments as possible.
  mg_write(connection, message.data(), message.size());
}

HttpResponse plain(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/plain; charset=utf-8";
  response.body = std::move(body);
  return response;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool decode_request_path(std::string_view raw, std::string& path) {
  path.clear();
  path.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      path += raw[i];
      continue;
    }
    if (i + 2 >= raw.size()) return false;
    const int high = hex_value(raw[i + 1]);
    const int low = hex_value(raw[i + 2]);
    if (high < 0 || low < 0 || (high == 0 && low == 0)) return false;
    path += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return true;
}

HttpServer::HttpServer(Options options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {
  static std::once_flag library_initialised;
  std::call_once(library_initialised, [] { mg_init_library(0); });

  const std::string ports = options_.address.civetweb_spec();
  const std::string threads = std::to_string(options_.worker_threads);
  const std::string request_timeout = std::to_string(options_.request_timeout.count());
  const std::string keep_alive_timeout = std::to_string(options_.keep_alive_timeout.count());
  // clang-format off
  const char* configuration[] = {
      "listening_ports", ports.c_str(),
      "num_threads", threads.c_str(),
      "enable_keep_alive", "yes",
      "tcp_nodelay", "1",
      "request_timeout_ms", request_timeout.c_str(),
      "keep_alive_timeout_ms", keep_alive_timeout.c_str(),
      "enable_auth_domain_check", "no",
      // Paths are decoded here (decode_request_path), where an encoded NUL
      // can be refused instead of silently cutting the path short.
      "decode_url", "no",
      nullptr,
  };
  // clang-format on
  mg_callbacks callbacks{};
  callbacks.begin_request = &HttpServer::on_begin_request;
  callbacks.log_message = &HttpServer::on_log_message;

  t_start_error.clear();
  t_starting = true;
  mg_context* context = mg_start(&callbacks, this, configuration);
  t_starting = false;
  if (context == nullptr) {
    throw std::runtime_error(fmt::format(
        "cannot serve HTTP on {}: {}", ports,
        t_start_error.empty() ? std::string("civetweb failed to start") : t_start_error));
  }
  mg_server_port bound[4];
  const int count = mg_get_server_ports(context, 4, bound);
  port_ = count > 0 ? bound[0].port : options_.address.port;
  context_.store(context);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  mg_context* context = context_.exchange(nullptr);
  if (context != nullptr) mg_stop(context);
}

int HttpServer::on_log_message(const mg_connection* /*connection*/, const char* message) {
  if (t_starting) {
    if (!t_start_error.empty()) t_start_error += "; ";
    t_start_error += message;
    return 1;
  }
  log_event(LogLevel::kDebug, "HTTP server message", {{"civetweb", message}});
  return 1;
}

int HttpServer::on_begin_request(mg_connection* connection) {
  auto* server = static_cast<HttpServer*>(mg_get_request_info(connection)->user_data);
  return server->serve(connection);
}

int HttpServer::serve(mg_connection* connection) {
  const mg_request_info* info = mg_get_request_info(connection);
  HttpRequest request;
  request.method = info->request_method != nullptr ? info->request_method : "";
  const bool head_only = request.method == "HEAD";
  // The path as sent, decoded but not cleaned up: "/x/../metrics" is not
  // /metrics (it gets 404).
  const char* raw_path = info->local_uri_raw != nullptr ? info->local_uri_raw
                         : info->local_uri != nullptr   ? info->local_uri
                                                        : "";
  if (!decode_request_path(raw_path, request.path)) {
    write_response(connection, info, plain(400, "400 bad request: malformed path\n"), head_only,
                   true);
    return 400;
  }

  // Bounded body: refuse a declared size over the limit without reading it,
  // and stop reading a chunked body as soon as it passes the limit.
  const long long declared = info->content_length;
  const bool chunked = has_token(header(connection, "Transfer-Encoding"), "chunked");
  if (declared > static_cast<long long>(options_.max_body_bytes)) {
    write_response(connection, info, plain(413, "413 request body too large\n"), head_only, true);
    return 413;
  }
  if (declared > 0 || chunked) {
    std::vector<char> buffer(16 * 1024);
    for (;;) {
      const int read = mg_read(connection, buffer.data(), buffer.size());
      if (read < 0) {
        write_response(connection, info, plain(400, "400 bad request body\n"), head_only, true);
        return 400;
      }
      if (read == 0) break;
      request.body.append(buffer.data(), static_cast<std::size_t>(read));
      if (request.body.size() > options_.max_body_bytes) {
        write_response(connection, info, plain(413, "413 request body too large\n"), head_only,
                       true);
        return 413;
      }
    }
  }

  request.host = header(connection, "Host");
  request.accept = header(connection, "Accept");
  request.accept_encoding = header(connection, "Accept-Encoding");
  request.authorization = header(connection, "Authorization");
  request.origin = header(connection, "Origin");
  request.mcp_protocol_version = header(connection, "MCP-Protocol-Version");
  request.remote_address = info->remote_addr;

  HttpResponse response;
  try {
    response = handler_(request);
  } catch (const std::exception& error) {
    log_event(LogLevel::kError, "Request handler failed",
              {{"path", request.path}, {"error", error.what()}});
    response = plain(500, "500 internal server error\n");
  } catch (...) {
    response = plain(500, "500 internal server error\n");
  }
  write_response(connection, info, response, head_only, false);
  return response.status;
}

}  // namespace poolscope::exporter
