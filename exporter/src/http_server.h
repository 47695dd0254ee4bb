#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "http_request.h"
#include "http_response.h"
#include "listen_address.h"

struct mg_context;
struct mg_connection;

namespace poolscope::exporter {

using namespace std::chrono_literals;

/// The exporter's HTTP/1.1 server (civetweb): every request, on every path,
/// goes to one handler.
///
/// Keep-alive is on with TCP_NODELAY (otherwise each keep-alive response
/// waits for the client's delayed ACK, ~40 ms). civetweb serves one
/// connection per worker thread, so `worker_threads` bounds the number of
/// concurrent connections; further connections queue. Request bodies larger
/// than `max_body_bytes` get 413 and the connection is closed; malformed
/// requests get civetweb's 400/411/505 and never reach the handler, nor do
/// paths with a bad or NUL percent-escape (400). A HEAD
/// request gets the GET response's headers without its body.
///
/// Thread-safe: the handler runs on the worker threads concurrently; port()
/// and stop() may be called from any thread.
class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  struct Options {
    ListenAddress address;
    int worker_threads = 16;
    std::size_t max_body_bytes = std::size_t{1} << 20;
    /// Longest time a client may take to send a request (slow clients hold a thread).
    std::chrono::milliseconds request_timeout = 10s;
    /// How long an idle keep-alive connection keeps its worker thread.
    std::chrono::milliseconds keep_alive_timeout = 2s;
  };

  /// Starts listening and serving. Throws std::runtime_error with civetweb's
  /// reason (e.g. the address is in use) when it cannot.
  HttpServer(Options options, Handler handler);
  /// Stops (see stop()).
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// The port actually bound (the kernel's choice when the address asked for 0).
  int port() const noexcept { return port_; }

  /// Stops accepting, waits for requests in progress to finish and releases
  /// the port. Idempotent.
  void stop();

 private:
  static int on_begin_request(mg_connection* connection);
  static int on_log_message(const mg_connection* connection, const char* message);
  int serve(mg_connection* connection);

  const Options options_;
  const Handler handler_;
  std::atomic<mg_context*> context_{nullptr};
  int port_ = 0;  // immutable after construction
};

/// Percent-decodes a request path ("/he%61lth" -> "/health"). Returns false
/// for a malformed escape or an encoded NUL ("/health%00.json" must not be
/// served as /health); the server answers those with 400. Pure function.
bool decode_request_path(std::string_view raw, std::string& path);

}  // namespace poolscope::exporter
