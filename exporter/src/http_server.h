#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http_request.h"
#include "http_response.h"
#include "listen_address.h"
#include "tls_server_settings.h"

namespace poolscope::exporter {

/// The exporter's HTTP/1.1 server: every request, on every path and every
/// listening address, goes to one handler.
///
/// Event-driven (Boost.Asio/Beast): one thread owns every socket, so idle,
/// slow or keep-alive connections cost a socket and a few KiB each, not a
/// thread. The handler runs on a pool of `worker_threads` threads, so a slow
/// handler never blocks the event loop. A client has `header_timeout` to send
/// the request line and headers (a slowloris client is cut then) and
/// `keep_alive_timeout` of silence between requests on a kept-alive
/// connection. At `max_connections` the server closes the oldest connection
/// that has not sent a complete request to make room, and logs it, so a
/// flood of idle connections never keeps a served client out.
///
/// Keep-alive is on with TCP_NODELAY. Request bodies larger than
/// `max_body_bytes` get 413 and the connection is closed; malformed requests
/// get 400, 431 (over `max_header_bytes` or `max_header_fields`) or 505 and
/// never reach the handler, nor do paths with a bad or NUL percent-escape
/// (400) or two differing Content-Length headers (400). A HEAD request gets
/// the GET response's headers without its body.
///
/// Thread-safe: the handler runs on the worker threads concurrently; port(),
/// listening() and stop() may be called from any thread.
class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  struct Options {
    /// Where to listen when `addresses` is empty.
    ListenAddress address;
    /// Several addresses to listen on (IPv4 and IPv6); overrides `address`.
    std::vector<ListenAddress> addresses;
    /// Threads running the handler. Concurrent scrapes wait for one shared
    /// collection on these threads, so more of them let a burst of scrapers
    /// share each collection; idle ones cost a stack each.
    int worker_threads = 16;
    std::size_t max_body_bytes = std::size_t{1} << 20;
    /// Longest request line plus headers; longer gets 431.
    std::size_t max_header_bytes = std::size_t{16} * 1024;
    /// Most header fields in one request; more get 431.
    std::size_t max_header_fields = 64;
    /// Time a client has from connecting (or from the previous response) to
    /// the end of its request headers, TLS handshake included.
    std::chrono::milliseconds header_timeout = std::chrono::seconds{5};
    /// Time a client has to send a request body once its headers are in.
    std::chrono::milliseconds request_timeout = std::chrono::seconds{10};
    /// Longest silence between requests on a kept-alive connection.
    std::chrono::milliseconds keep_alive_timeout = std::chrono::seconds{2};
    /// Open connections at most; see the class comment for what happens then.
    std::size_t max_connections = 4096;
    /// How long stop() lets requests in progress finish before closing them.
    std::chrono::milliseconds drain_timeout = std::chrono::seconds{5};
    /// Serve HTTPS instead of HTTP on every address.
    std::optional<TlsServerSettings> tls;
  };

  /// Starts listening and serving. Throws std::runtime_error naming the
  /// address and the reason (e.g. the address is in use, a key that does not
  /// match its certificate) when it cannot.
  HttpServer(Options options, Handler handler);
  /// Stops (see stop()).
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// The port actually bound on the first address (the kernel's choice when
  /// the address asked for 0).
  int port() const noexcept;

  /// Every address listened on, with the ports actually bound; "every
  /// interface" appears as "::" (IPv6 and IPv4) or "0.0.0.0" (IPv4 only).
  std::vector<ListenAddress> listening() const;

  /// Stops accepting, closes idle connections at once, lets requests in
  /// progress finish (at most `drain_timeout`) and releases the ports.
  /// Idempotent.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// Percent-decodes a request path ("/he%61lth" -> "/health"). Returns false
/// for a malformed escape or an encoded NUL ("/health%00.json" must not be
/// served as /health); the server answers those with 400. Pure function.
bool decode_request_path(std::string_view raw, std::string& path);

}  // namespace poolscope::exporter
