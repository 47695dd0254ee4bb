#include "http_server.h"

#include <fmt/format.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <exception>
#include <list>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "exporter_log.h"

namespace poolscope::exporter {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

std::string_view view(beast::string_view text) { return {text.data(), text.size()}; }

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

using Request = http::request<http::string_body>;
using Parser = http::request_parser<http::string_body>;

// Whether the connection stays open after the response; the Connection header
// sent says the same. The server also closes after every 401, so a client
// guessing passwords pays a new connection per guess.
bool keeps_alive(const Request& request, int status) {
  if (status == 401) return false;
  const auto connection = request.find(http::field::connection);
  if (connection != request.end()) return has_token(view(connection->value()), "keep-alive");
  return request.version() == 11;
}

std::string serialise(const HttpResponse& response, unsigned version, bool head_only,
                      bool keep_alive) {
  std::string message =
      fmt::format("HTTP/{}.{} {} {}\r\n", version / 10, version % 10, response.status,
                  view(http::obsolete_reason(static_cast<http::status>(response.status))));
  if (!response.content_type.empty()) {
    message += fmt::format("Content-Type: {}\r\n", response.content_type);
  }
  // 204 and 304 carry no body and no Content-Length.
  const bool has_body = response.status != 204 && response.status != 304;
  if (has_body) message += fmt::format("Content-Length: {}\r\n", response.body.size());
  for (const auto& [name, value] : response.headers) {
    message += fmt::format("{}: {}\r\n", name, value);
  }
  message += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  // One write: headers and body leave in as few segments as possible.
  if (!head_only && has_body) message += response.body;
  return message;
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

int openssl_version(int version) {
  switch (version) {
    case 0x0301:
      return TLS1_VERSION;
    case 0x0302:
      return TLS1_1_VERSION;
    case 0x0303:
      return TLS1_2_VERSION;
    default:
      return TLS1_3_VERSION;
  }
}

std::unique_ptr<ssl::context> make_tls_context(const TlsServerSettings& settings) {
  auto context = std::make_unique<ssl::context>(ssl::context::tls_server);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::single_dh_use);
  SSL_CTX* native = context->native_handle();
  SSL_CTX_set_min_proto_version(native, openssl_version(settings.min_version));
  SSL_CTX_set_max_proto_version(native, openssl_version(settings.max_version));
  if (settings.prefer_server_cipher_suites) {
    SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE);
  }
  if (!settings.cipher_list.empty() &&
      SSL_CTX_set_cipher_list(native, settings.cipher_list.c_str()) != 1) {
    throw std::runtime_error(
        fmt::format("OpenSSL accepts none of the TLS cipher suites {}", settings.cipher_list));
  }
  if (!settings.groups.empty() && SSL_CTX_set1_groups_list(native, settings.groups.c_str()) != 1) {
    throw std::runtime_error(
        fmt::format("OpenSSL does not support the TLS curves {}", settings.groups));
  }
  auto load = [](const char* what, auto&& step) {
    try {
      step();
    } catch (const boost::system::system_error& error) {
      throw std::runtime_error(fmt::format("cannot load the TLS {}: {}", what, error.what()));
    }
  };
  load("certificate",
       [&] { context->use_certificate_chain(net::buffer(settings.certificate_pem)); });
  load("private key",
       [&] { context->use_private_key(net::buffer(settings.private_key_pem), ssl::context::pem); });
  if (SSL_CTX_check_private_key(native) != 1) {
    throw std::runtime_error("the TLS private key does not match the certificate");
  }
  if (!settings.client_ca_pem.empty()) {
    load("client CA",
         [&] { context->add_certificate_authority(net::buffer(settings.client_ca_pem)); });
  }
  using ClientAuth = TlsServerSettings::ClientAuth;
  switch (settings.client_auth) {
    case ClientAuth::kNoClientCert:
      context->set_verify_mode(ssl::verify_none);
      break;
    case ClientAuth::kRequestClientCert:
      context->set_verify_mode(ssl::verify_peer);
      context->set_verify_callback([](bool, ssl::verify_context&) { return true; });
      break;
    case ClientAuth::kRequireAnyClientCert:
      context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      context->set_verify_callback([](bool, ssl::verify_context&) { return true; });
      break;
    case ClientAuth::kVerifyClientCertIfGiven:
      context->set_verify_mode(ssl::verify_peer);
      break;
    case ClientAuth::kRequireAndVerifyClientCert:
      context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      break;
  }
  return context;
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

// Everything below runs on the event-loop thread unless it says otherwise:
// sessions, the session list and the acceptors need no lock.
class HttpServer::Impl {
 public:
  class Session;
  template <class Stream>
  class StreamSession;

  Impl(Options options, Handler handler);
  ~Impl() { stop(); }

  void stop();
  int port() const noexcept { return bound_.empty() ? 0 : bound_.front().port; }
  const std::vector<ListenAddress>& listening() const noexcept { return bound_; }

 private:
  const Options options_;
  const Handler handler_;
  friend class Session;

  void listen(const ListenAddress& address);
  void accept(std::size_t acceptor_index);
  void on_accept(std::size_t acceptor_index, tcp::socket socket);
  bool make_room();
  void begin_stop();
  void session_ended() noexcept;

  std::vector<ListenAddress> bound_;  // immutable after construction
  std::list<Session*> sessions_;      // in accept order, oldest first
  bool stopping_ = false;
  std::size_t evicted_since_log_ = 0;
  std::chrono::steady_clock::time_point last_full_log_{};
  std::atomic<bool> stop_requested_{false};

  net::io_context io_{1};
  net::executor_work_guard<net::io_context::executor_type> keep_running_{io_.get_executor()};
  net::steady_timer drain_timer_{io_};
  std::unique_ptr<ssl::context> tls_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  std::vector<std::unique_ptr<net::steady_timer>> accept_retry_;
  std::thread event_loop_;
  net::thread_pool workers_;
};

// One client connection from accept to close; the stream-independent part.
class HttpServer::Impl::Session {
 public:
  enum class State { kHandshake, kReadingHeader, kReadingBody, kHandling, kWriting, kClosing };

  explicit Session(Impl& server) : server_(server) {
    position_ = server_.sessions_.insert(server_.sessions_.end(), this);
  }
  virtual ~Session() {
    server_.sessions_.erase(position_);
    server_.session_ended();
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Waiting for a client that has not sent a complete request: closing it
  /// loses no work.
  bool idle() const {
    return state_ == State::kHandshake || state_ == State::kReadingHeader ||
           state_ == State::kClosing;
  }
  /// Closes the socket; pending operations end with operation_aborted.
  virtual void evict() = 0;

 protected:
  Impl& server_;
  State state_ = State::kHandshake;

 private:
  std::list<Session*>::iterator position_;
};

template <class Stream>
class HttpServer::Impl::StreamSession : public Session,
                                        public std::enable_shared_from_this<StreamSession<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <class... StreamArguments>
  StreamSession(Impl& server, StreamArguments&&... arguments)
      : Session(server), stream_(std::forward<StreamArguments>(arguments)...) {}

  void start() {
    if constexpr (kTls) {
      state_ = State::kHandshake;
      lowest().expires_after(server_.options_.header_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code error) {
                                if (error) return self->close_now();
                                self->read_header(self->server_.options_.header_timeout);
                              });
    } else {
      read_header(server_.options_.header_timeout);
    }
  }

  void evict() override { close_now(); }

 private:
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  // The parser of the request being read: read_header() creates it before any
  // handler that asks for it can run.
  Parser& parser() {
    if (!parser_) throw std::logic_error("HTTP session: no request is being read");
    return *parser_;
  }

  // The client's IP address ("" when the socket is gone); an IPv4 client of
  // a dual-stack socket as plain IPv4, so per-client limits see one address.
  std::string remote_address() {
    beast::error_code error;
    const tcp::endpoint peer = lowest().socket().remote_endpoint(error);
    if (error) return {};
    const net::ip::address address = peer.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
      return net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6()).to_string();
    }
    return address.to_string();
  }

  void read_header(std::chrono::milliseconds deadline) {
    state_ = State::kReadingHeader;
    Parser& next = parser_.emplace();
    next.header_limit(static_cast<std::uint32_t>(server_.options_.max_header_bytes));
    next.body_limit(server_.options_.max_body_bytes);
    lowest().expires_after(deadline);
    http::async_read_header(stream_, buffer_, next,
                            [self = this->shared_from_this()](
                                beast::error_code error, std::size_t) { self->on_header(error); });
  }

  void on_header(beast::error_code error) {
    if (error) return refuse_unreadable(error);
    const Request& request = parser().get();
    if (request.version() != 10 && request.version() != 11) {
      return refuse(plain(505, "505 HTTP version not supported: use HTTP/1.1\n"));
    }
    std::size_t fields = 0;
    std::size_t content_lengths = 0;
    for (const auto& field : request) {
      ++fields;
      if (field.name() == http::field::content_length) ++content_lengths;
    }
    if (fields > server_.options_.max_header_fields) {
      return refuse(plain(431, fmt::format("431 too many header fields: {} (at most {})\n", fields,
                                           server_.options_.max_header_fields)));
    }
    if (content_lengths > 1) {
      return refuse(plain(400, "400 bad request: more than one Content-Length header\n"));
    }
    if (parser().is_done()) return dispatch();
    state_ = State::kReadingBody;
    if (has_token(view(request[http::field::expect]), "100-continue")) {
      // A client waiting for 100 Continue would otherwise wait out its own timer.
      out_ = fmt::format("HTTP/{}.{} 100 Continue\r\n\r\n", request.version() / 10,
                         request.version() % 10);
      lowest().expires_after(server_.options_.request_timeout);
      return net::async_write(
          stream_, net::buffer(out_),
          [self = this->shared_from_this()](beast::error_code error, std::size_t) {
            if (error) return self->close_now();
            self->read_body();
          });
    }
    read_body();
  }

  void read_body() {
    lowest().expires_after(server_.options_.request_timeout);
    http::async_read(stream_, buffer_, parser(),
                     [self = this->shared_from_this()](beast::error_code error, std::size_t) {
                       if (error) return self->refuse_unreadable(error);
                       self->dispatch();
                     });
  }

  // A read failed: answer when the client can still read an answer, else close.
  // A timeout has already closed the socket (beast::tcp_stream does), so a
  // slow client gets no 408, only the closed connection.
  void refuse_unreadable(beast::error_code error) {
    if (error == net::error::operation_aborted || error == net::error::connection_reset ||
        error == http::error::end_of_stream || error == beast::error::timeout) {
      return close_now();
    }
    if (error == http::error::bad_version && names_a_version()) {
      // The HTTP/2 connection preface ("PRI * HTTP/2.0") is not an HTTP/1 request.
      if (received().starts_with("PRI * HTTP/2.0\r\n")) {
        return refuse(plain(400, "400 bad request: HTTP/2 is not served here; use HTTP/1.1\n"));
      }
      return refuse(plain(505, "505 HTTP version not supported: use HTTP/1.1\n"));
    }
    if (error == http::error::header_limit) {
      return refuse(plain(431, fmt::format("431 request header larger than {} bytes\n",
                                           server_.options_.max_header_bytes)));
    }
    if (error == http::error::body_limit) {
      return refuse(plain(413, "413 request body too large\n"));
    }
    refuse(plain(400, fmt::format("400 bad request: {}\n", error.message())));
  }

  // What the client sent that the parser has not consumed.
  std::string_view received() const {
    const auto data = buffer_.cdata();
    return {static_cast<const char*>(data.data()), data.size()};
  }

  // Whether the unparsed request line ends in a well-formed "HTTP/d.d" (then
  // the version is refused with 505; anything else is malformed: 400).
  bool names_a_version() const {
    const std::string_view line = received().substr(0, received().find("\r\n"));
    if (line.size() < 9) return false;
    const std::string_view version = line.substr(line.size() - 8);
    return version.substr(0, 5) == "HTTP/" &&
           std::isdigit(static_cast<unsigned char>(version[5])) && version[6] == '.' &&
           std::isdigit(static_cast<unsigned char>(version[7]));
  }

  void refuse(const HttpResponse& response) {
    const unsigned version = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
    write(serialise(response, version == 10 ? 10 : 11, false, false), false);
  }

  void dispatch() {
    state_ = State::kHandling;
    lowest().expires_never();
    Request& message = parser().get();
    HttpRequest request;
    request.method = std::string(view(message.method_string()));
    const bool head_only = message.method() == http::verb::head;
    // The path as sent, decoded but not cleaned up: "/x/../metrics" is not
    // /metrics (it gets 404).
    const std::string_view target = view(message.target());
    if (!decode_request_path(target.substr(0, target.find('?')), request.path)) {
      return refuse(plain(400, "400 bad request: malformed path\n"));
    }
    request.host = std::string(view(message[http::field::host]));
    request.accept = std::string(view(message[http::field::accept]));
    request.accept_encoding = std::string(view(message[http::field::accept_encoding]));
    request.authorization = std::string(view(message[http::field::authorization]));
    request.origin = std::string(view(message[http::field::origin]));
    request.mcp_protocol_version = std::string(view(message["MCP-Protocol-Version"]));
    request.remote_address = remote_address();
    request.body = std::move(message.body());

    net::post(server_.workers_, [self = this->shared_from_this(), request = std::move(request),
                                 head_only, work = net::make_work_guard(server_.io_)]() mutable {
      // Worker thread: only the handler and the response's serialisation.
      HttpResponse response;
      try {
        response = self->server_.handler_(request);
      } catch (const std::exception& error) {
        log_event(LogLevel::kError, "Request handler failed",
                  {{"path", request.path}, {"error", error.what()}});
        response = plain(500, "500 internal server error\n");
      } catch (...) {
        response = plain(500, "500 internal server error\n");
      }
      // The session's last reference must drop on the event-loop thread.
      net::io_context& io = self->server_.io_;
      net::post(io, [self = std::move(self), response = std::move(response), head_only] {
        self->respond(response, head_only);
      });
    });
  }

  void respond(const HttpResponse& response, bool head_only) {
    const Request& request = parser().get();
    const bool keep_alive = !server_.stopping_ && keeps_alive(request, response.status);
    write(serialise(response, request.version(), head_only, keep_alive), keep_alive);
  }

  void write(std::string message, bool keep_alive) {
    state_ = State::kWriting;
    out_ = std::move(message);
    // A client that does not read its response is cut like one that does not send.
    lowest().expires_after(server_.options_.request_timeout);
    net::async_write(
        stream_, net::buffer(out_),
        [self = this->shared_from_this(), keep_alive](beast::error_code error, std::size_t) {
          if (error) return self->close_now();
          if (keep_alive && !self->server_.stopping_) {
            return self->read_header(self->server_.options_.keep_alive_timeout);
          }
          self->close_gracefully();
        });
  }

  // Closes after the response so the client reads all of it: closing a socket
  // with unread request bytes (a refused body) would reset the connection and
  // could discard the response on the client's side.
  void close_gracefully() {
    state_ = State::kClosing;
    lowest().expires_after(std::chrono::seconds(1));
    if constexpr (kTls) {
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->close_now(); });
    } else {
      beast::error_code ignored;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
      drain();
    }
  }

  void drain() {
    lowest().async_read_some(net::buffer(scratch_), [self = this->shared_from_this()](
                                                        beast::error_code error, std::size_t) {
      if (error) return self->close_now();
      self->drain();
    });
  }

  void close_now() {
    state_ = State::kClosing;
    lowest().close();
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  std::string out_;
  std::array<char, 4096> scratch_{};
};

HttpServer::Impl::Impl(Options options, Handler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      workers_(static_cast<std::size_t>(std::max(1, options_.worker_threads))) {
  if (options_.tls) tls_ = make_tls_context(*options_.tls);
  std::vector<ListenAddress> addresses = options_.addresses;
  if (addresses.empty()) addresses.push_back(options_.address);
  try {
    for (const ListenAddress& address : addresses) listen(address);
  } catch (...) {
    workers_.join();
    throw;
  }
  for (std::size_t i = 0; i < acceptors_.size(); ++i) accept(i);
  event_loop_ = std::thread([this] {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& error) {
        log_event(LogLevel::kError, "HTTP server event loop failed; continuing",
                  {{"error", error.what()}});
      }
    }
  });
}

void HttpServer::Impl::listen(const ListenAddress& address) {
  auto fail = [&](const std::string& why) {
    return std::runtime_error(fmt::format("cannot serve HTTP on {}: {}", address.to_string(), why));
  };
  std::vector<tcp::endpoint> candidates;
  const auto port = static_cast<unsigned short>(address.port);
  if (address.host.empty()) {
    // Every interface: one dual-stack IPv6 socket, or IPv4 alone where the
    // kernel has no IPv6.
    candidates = {tcp::endpoint(tcp::v6(), port), tcp::endpoint(tcp::v4(), port)};
  } else {
    beast::error_code error;
    const auto ip = net::ip::make_address(address.host, error);
    if (error) throw fail(error.message());
    candidates = {tcp::endpoint(ip, port)};
  }
  beast::error_code error;
  for (const tcp::endpoint& endpoint : candidates) {
    auto acceptor = std::make_unique<tcp::acceptor>(io_);
    error = {};
    acceptor->open(endpoint.protocol(), error);
    if (error) continue;
    acceptor->set_option(net::socket_base::reuse_address(true), error);
    if (address.host.empty() && endpoint.address().is_v6()) {
      acceptor->set_option(net::ip::v6_only(false), error);
    }
    acceptor->bind(endpoint, error);
    if (error) break;  // in use, not permitted: the same on the other family
    acceptor->listen(net::socket_base::max_listen_connections, error);
    if (error) break;
    const tcp::endpoint local = acceptor->local_endpoint();
    // For every interface, say which: "::" (dual-stack) or "0.0.0.0".
    bound_.push_back(ListenAddress{
        address.host.empty() ? local.address().to_string() : address.host, local.port()});
    acceptors_.push_back(std::move(acceptor));
    accept_retry_.push_back(std::make_unique<net::steady_timer>(io_));
    return;
  }
  throw fail(error.message());
}

void HttpServer::Impl::accept(std::size_t acceptor_index) {
  acceptors_[acceptor_index]->async_accept(
      [this, acceptor_index](beast::error_code error, tcp::socket socket) {
        if (stopping_) return;
        if (error) {
          // Out of descriptors (EMFILE/ENFILE): make room and retry shortly
          // instead of spinning on the same error.
          log_event(LogLevel::kWarning, "HTTP server cannot accept a connection",
                    {{"error", error.message()}, {"open_connections", sessions_.size()}});
          make_room();
          accept_retry_[acceptor_index]->expires_after(std::chrono::milliseconds(50));
          accept_retry_[acceptor_index]->async_wait([this, acceptor_index](beast::error_code) {
            if (!stopping_) accept(acceptor_index);
          });
          return;
        }
        on_accept(acceptor_index, std::move(socket));
        accept(acceptor_index);
      });
}

void HttpServer::Impl::on_accept(std::size_t /*acceptor_index*/, tcp::socket socket) {
  if (sessions_.size() >= options_.max_connections && !make_room()) {
    log_event(LogLevel::kWarning,
              "HTTP server at its connection limit with every connection busy; closing the new one",
              {{"max_connections", options_.max_connections}});
    return;  // the socket closes here
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  if (tls_) {
    auto session = std::make_shared<StreamSession<beast::ssl_stream<beast::tcp_stream>>>(
        *this, std::move(socket), *tls_);
    session->start();
  } else {
    auto session = std::make_shared<StreamSession<beast::tcp_stream>>(*this, std::move(socket));
    session->start();
  }
}

// Closes the oldest connection that has not sent a complete request. False
// when every connection is serving a request.
bool HttpServer::Impl::make_room() {
  for (Session* session : sessions_) {
    if (!session->idle()) continue;
    session->evict();
    ++evicted_since_log_;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_full_log_ >= std::chrono::seconds(10)) {
      log_event(LogLevel::kWarning,
                "HTTP server at its connection limit: closing the oldest connections that have "
                "not sent a request",
                {{"max_connections", options_.max_connections},
                 {"closed_since_last_report", evicted_since_log_}});
      last_full_log_ = now;
      evicted_since_log_ = 0;
    }
    return true;
  }
  return false;
}

void HttpServer::Impl::stop() {
  if (stop_requested_.exchange(true)) return;
  if (event_loop_.joinable()) {
    net::post(io_, [this] { begin_stop(); });
    event_loop_.join();
  }
  workers_.join();
}

void HttpServer::Impl::begin_stop() {
  stopping_ = true;
  for (auto& acceptor : acceptors_) {
    beast::error_code ignored;
    acceptor->close(ignored);
  }
  for (auto& timer : accept_retry_) timer->cancel();
  // Idle connections go now; requests in progress finish, with "Connection:
  // close", within the drain timeout.
  std::vector<Session*> idle;
  for (Session* session : sessions_) {
    if (session->idle()) idle.push_back(session);
  }
  for (Session* session : idle) session->evict();
  keep_running_.reset();
  drain_timer_.expires_after(options_.drain_timeout);
  drain_timer_.async_wait([this](beast::error_code error) {
    if (error) return;  // cancelled: every session ended in time
    log_event(LogLevel::kWarning, "HTTP server stopped with requests still in progress",
              {{"open_connections", sessions_.size()}});
    std::vector<Session*> left(sessions_.begin(), sessions_.end());
    for (Session* session : left) session->evict();
  });
  session_ended();
}

// ~Session calls this, so it must not throw: a timer that cannot be
// cancelled still ends the drain at its deadline.
void HttpServer::Impl::session_ended() noexcept {
  if (!stopping_ || !sessions_.empty()) return;
  try {
    drain_timer_.cancel();
  } catch (const boost::system::system_error&) {
  }
}

HttpServer::HttpServer(Options options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() = default;

int HttpServer::port() const noexcept { return impl_->port(); }

std::vector<ListenAddress> HttpServer::listening() const { return impl_->listening(); }

void HttpServer::stop() { impl_->stop(); }

}  // namespace poolscope::exporter
