#include "endpoints.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <prometheus/text_serializer.h>

#include <cctype>
#include <exception>
#include <optional>
#include <sstream>
#include <string>

#include "exporter_log.h"
#include "gzip.h"
#include "health_document.h"

namespace poolscope::exporter {
namespace {

constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kReadOnlyMethods = "GET, HEAD, OPTIONS";
// /mcp bodies from this size on are followed by malloc_trim (see mcp()).
constexpr std::size_t kTrimAfterBodyBytes = std::size_t{16} * 1024;

HttpResponse text_response(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/plain; charset=utf-8";
  response.body = std::move(body);
  return response;
}

bool is_read_method(std::string_view method) { return method == "GET" || method == "HEAD"; }

// 204 for OPTIONS, 405 for anything else that is not GET/HEAD; nullopt when
// the method is fine.
std::optional<HttpResponse> check_read_method(std::string_view method) {
  if (is_read_method(method)) return std::nullopt;
  HttpResponse response;
  if (method == "OPTIONS") {
    response.status = 204;
  } else {
    response = text_response(405, "405 method not allowed\n");
  }
  response.headers.emplace_back("Allow", kReadOnlyMethods);
  return response;
}

std::string lowercase(std::string_view text) {
  std::string lowered(text);
  for (char& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lowered;
}

std::string_view host_without_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const std::size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  const std::size_t colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool is_ipv4_literal(std::string_view name) {
  const std::string text(name);
  in_addr address{};
  return inet_pton(AF_INET, text.c_str(), &address) == 1;
}

HttpResponse too_busy(std::string body) {
  HttpResponse response = text_response(503, std::move(body));
  response.headers.emplace_back("Retry-After", "1");
  return response;
}

}  // namespace

bool is_allowed_host(std::string_view host, const std::vector<std::string>& allowed_hosts) {
  if (host.empty()) return true;
  const std::string lowered = lowercase(host);
  std::string_view name = host_without_port(lowered);
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') return true;  // IPv6
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);  // "host." is "host"
  if (name.empty()) return false;
  if (name == "localhost" || is_ipv4_literal(name)) return true;
  for (const std::string& allowed : allowed_hosts) {
    if (name == allowed) return true;
    if (allowed.starts_with('.') && name.ends_with(allowed)) return true;
  }
  return false;
}

bool is_allowed_origin(std::string_view origin, std::string_view host) noexcept {
  if (origin.empty()) return true;
  const std::string lowered = lowercase(origin);
  std::string_view rest = lowered;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else {
    return false;  // "null" and other schemes
  }
  const std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.empty()) return false;
  const std::string_view origin_host = host_without_port(authority);
  if (origin_host == "localhost" || origin_host == "127.0.0.1" || origin_host == "[::1]") {
    return true;
  }
  return !host.empty() && authority == lowercase(host);
}

Endpoints::Endpoints(Options options, Sources sources,
                     std::unique_ptr<BasicAuthenticator> authenticator,
                     std::unique_ptr<RateLimiter> rate_limiter)
    : options_(std::move(options)),
      sources_(std::move(sources)),
      authenticator_(std::move(authenticator)),
      rate_limiter_(std::move(rate_limiter)),
      client_rate_limiter_(authenticator_ && authenticator_->enabled() && rate_limiter_ &&
                                   rate_limiter_->enabled()
                               ? std::make_unique<ClientRateLimiter>(rate_limiter_->interval(),
                                                                     rate_limiter_->burst())
                               : nullptr),
      mcp_server_(McpServer::Resources{
                      [this] { return health_document(sources_.statistics(), sources_.now()); },
                      [this] { return statistics_document(sources_.statistics()); }},
                  "poolscope-exporter", options_.version,
                  authenticator_ ? sources_.actions : McpServer::Actions{}) {}

HttpResponse Endpoints::handle(const HttpRequest& request) const {
  HttpResponse response;
  try {
    response = route(request);
  } catch (const std::exception& error) {
    log_event(LogLevel::kError, "Request failed",
              {{"path", request.path}, {"error", error.what()}});
    response = text_response(500, "500 internal server error\n");
  } catch (...) {
    response = text_response(500, "500 internal server error\n");
  }
  for (const auto& header : options_.response_headers) response.headers.push_back(header);
  return response;
}

std::optional<HttpResponse> Endpoints::refuse_unauthorized(const HttpRequest& request) const {
  const auto rate_limited = [] { return text_response(429, "429 too many requests\n"); };
  if (!authenticator_ || !authenticator_->enabled()) {
    if (rate_limiter_ && !rate_limiter_->allow()) return rate_limited();
    return std::nullopt;
  }
  // Credentials verified before cost one HMAC to recognise and take from the
  // shared budget; everything else (no, new or wrong credentials) from its
  // client's own bucket before any bcrypt runs.
  if (authenticator_->is_cached(request.authorization)) {
    if (rate_limiter_ && !rate_limiter_->allow()) return rate_limited();
    return std::nullopt;
  }
  if (client_rate_limiter_ && !client_rate_limiter_->allow(request.remote_address)) {
    return rate_limited();
  }
  if (options_.public_health && request.path == "/health") return std::nullopt;
  switch (authenticator_->verify(request.authorization)) {
    case BasicAuthenticator::Verdict::kAuthorized:
      return std::nullopt;
    case BasicAuthenticator::Verdict::kBusy:
      return too_busy("503 busy checking other credentials; retry\n");
    case BasicAuthenticator::Verdict::kRefused:
      break;
  }
  HttpResponse response = text_response(401, "401 unauthorized\n");
  response.headers.emplace_back("WWW-Authenticate", BasicAuthenticator::kChallenge);
  return response;
}

HttpResponse Endpoints::route(const HttpRequest& request) const {
  if (auto refused = refuse_unauthorized(request)) return *refused;
  const std::string& path = request.path;
  if (path == options_.telemetry_path) {
    if (auto refused = check_read_method(request.method)) return *refused;
    return metrics(request);
  }
  if (path == "/health") {
    if (auto refused = check_read_method(request.method)) return *refused;
    return health();
  }
  if (path == "/mcp") return mcp(request);
  if (path == "/") {
    if (auto refused = check_read_method(request.method)) return *refused;
    return landing();
  }
  return text_response(404, "404 page not found\n");
}

HttpResponse Endpoints::metrics(const HttpRequest& request) const {
  HttpResponse response;
  response.content_type = kMetricsContentType;
  const std::shared_ptr<const std::string> page = fresh_metrics_text();
  response.headers.emplace_back("Vary", "Accept-Encoding");
  if (accepts_gzip(request.accept_encoding)) {
    response.body = gzip_compress(*page);
    response.headers.emplace_back("Content-Encoding", "gzip");
  } else {
    response.body = *page;
  }
  return response;
}

// A page collected entirely after the call began: a scrape that arrives
// while another collection runs waits for the one after it rather than take
// values read before it asked. The first waiter collects; the others take
// its page. A failed collection throws to its collector; the waiters start
// another.
std::shared_ptr<const std::string> Endpoints::fresh_metrics_text() const {
  std::unique_lock lock(collection_mutex_);
  const std::uint64_t wanted = collections_finished_ + (collecting_ ? 2 : 1);
  while (collections_finished_ < wanted) {
    if (collecting_) {
      collection_done_.wait(lock);
      continue;
    }
    collecting_ = true;
    lock.unlock();
    std::shared_ptr<const std::string> page;
    try {
      page = std::make_shared<const std::string>(collect_metrics_text());
    } catch (...) {
      lock.lock();
      collecting_ = false;
      collection_done_.notify_all();
      throw;
    }
    lock.lock();
    collecting_ = false;
    ++collections_finished_;
    last_page_ = std::move(page);
    collection_done_.notify_all();
  }
  return last_page_;
}

std::string Endpoints::collect_metrics_text() const {
  const std::vector<prometheus::MetricFamily> families = sources_.metrics();
  // Serialised straight into a string sized from the previous scrape:
  // Serializer::Serialize(families) grows an ostringstream by doubling and
  // then copies it out, which made a 10 KB page cost ~27 KB of heap at once
  // on every concurrently served scrape (each in its own malloc arena, where
  // the high-water mark stays resident).
  std::string buffer;
  const std::size_t hint = metrics_size_hint_.load(std::memory_order_relaxed);
  buffer.reserve(hint + hint / 8 + 256);
  std::ostringstream out(std::move(buffer), std::ios::out | std::ios::ate);
  prometheus::TextSerializer().Serialize(out, families);
  std::string page = std::move(out).str();
  metrics_size_hint_.store(page.size(), std::memory_order_relaxed);
  return page;
}

HttpResponse Endpoints::health() const {
  const PoolStatistics stats = sources_.statistics();
  const bool serving = can_serve(stats) && !shutting_down();
  nlohmann::json document = health_document(stats, sources_.now());
  if (shutting_down()) document["status"] = "draining";
  HttpResponse response;
  response.status = serving ? 200 : 503;
  response.content_type = "application/json";
  response.body = document.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}

HttpResponse Endpoints::landing() const {
  HttpResponse response;
  response.content_type = "text/html; charset=utf-8";
  const PoolStatistics stats = sources_.statistics();
  LandingPageInfo info;
  info.version = options_.version;
  info.telemetry_path = options_.telemetry_path;
  info.runbooks_url = options_.runbooks_url;
  info.prometheus_url = options_.prometheus_url;
  info.alertmanager_url = options_.alertmanager_url;
  response.body =
      render_landing_page(info, stats, health_document(stats, sources_.now()), shutting_down());
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}

HttpResponse Endpoints::mcp(const HttpRequest& request) const {
  if (!is_allowed_host(request.host, options_.allowed_hosts)) {
    return text_response(403,
                         "403 forbidden: unexpected Host; add the name to --web.allowed-hosts\n");
  }
  if (!is_allowed_origin(request.origin, request.host)) {
    return text_response(403, "403 forbidden: unexpected Origin\n");
  }
  if (!request.mcp_protocol_version.empty() &&
      !McpServer::is_supported_protocol_version(request.mcp_protocol_version)) {
    return text_response(400, "400 bad request: unsupported MCP-Protocol-Version\n");
  }
  if (request.body.size() > options_.mcp_max_body_bytes) {
    return text_response(413, "413 request body too large for /mcp\n");
  }
  // A parsed document takes several times its body in memory: bound how many
  // exist at once.
  std::size_t busy = mcp_in_progress_.load();
  do {
    if (busy >= options_.mcp_max_concurrent) return too_busy("503 too many MCP requests; retry\n");
  } while (!mcp_in_progress_.compare_exchange_weak(busy, busy + 1));
  struct Release {
    std::atomic<std::size_t>& in_progress;
    ~Release() { in_progress.fetch_sub(1); }
  } release{mcp_in_progress_};
  HttpResponse response = mcp_server_.handle(request.method, request.accept, request.body);
  response.headers.emplace_back("Cache-Control", "no-store");
  // The parsed document is gone, but glibc keeps freed memory in the arena
  // of the worker thread that parsed it, one arena per worker: without a
  // trim, large bodies spread over the workers leave tens of MB resident.
  if (request.body.size() >= kTrimAfterBodyBytes) malloc_trim(0);
  return response;
}

}  // namespace poolscope::exporter
