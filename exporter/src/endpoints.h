#pragma once

#include <prometheus/metric_family.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "basic_authenticator.h"
#include "client_rate_limiter.h"
#include "http_request.h"
#include "http_response.h"
#include "landing_page.h"
#include "mcp_server.h"
#include "poolscope/pool_statistics.h"
#include "rate_limiter.h"

namespace poolscope::exporter {

/// The exporter's HTTP endpoints, independent of the HTTP server: one
/// request in, one response out.
///
/// Routes `telemetry_path` (Prometheus text format, gzip when accepted),
/// `/health` (the health document; 503 when the pool cannot serve or the
/// exporter is shutting down), `/mcp` (McpServer) and `/` (landing page).
/// Unknown paths get 404, wrong methods 405 with Allow. Scrapes that arrive
/// while a collection is running share the next one, so a burst of scrapers
/// costs one collection per round, and no page predates its request.
///
/// With basic-auth users, requests without valid credentials get 401 with
/// WWW-Authenticate (except /health when `public_health` is set), and 503
/// with Retry-After when every bcrypt slot is busy. With a rate limit, excess
/// requests get 429: without auth from one shared bucket; with auth,
/// requests whose credentials are cached take from that shared bucket and
/// all others from a bucket of their client address, so a client sending
/// wrong passwords cannot use up the budget of clients that authenticated.
///
/// /mcp also checks the Host header (is_allowed_host(): 403 otherwise, the
/// defence against DNS rebinding), refuses bodies over `mcp_max_body_bytes`
/// with 413 and answers 503 when `mcp_max_concurrent` requests are already
/// being parsed, so its memory use is bounded per request and in total.
///
/// Responses are built from the Sources only: nothing here touches the
/// database.
///
/// Thread-safe: handle() may run on any number of threads at once, provided
/// the Sources callbacks may too.
class Endpoints {
 public:
  struct Options {
    std::string telemetry_path = "/metrics";
    std::string version;  ///< shown on the landing page and in MCP serverInfo
    /// Headers added to every response (web configuration's http_server_config.headers).
    std::vector<std::pair<std::string, std::string>> response_headers;
    std::string runbooks_url;      ///< landing page: base URL of the runbooks ("" = no links)
    std::string prometheus_url;    ///< landing page: Prometheus base URL ("" = no links)
    std::string alertmanager_url;  ///< landing page: Alertmanager base URL ("" = no link)
    /// Host names /mcp accepts besides IP literals and localhost (lower
    /// case, no port); an entry starting with "." also accepts its subdomains.
    std::vector<std::string> allowed_hosts;
    /// Largest /mcp request body; larger ones get 413.
    std::size_t mcp_max_body_bytes = std::size_t{64} << 10;
    /// Most /mcp requests handled at once; more get 503.
    std::size_t mcp_max_concurrent = 4;
    /// Serve /health without credentials even when basic auth is on.
    bool public_health = false;
  };

  /// Where responses come from. Both are called on request threads.
  struct Sources {
    /// A statistics snapshot with no secret in it (cheap, no I/O).
    std::function<PoolStatistics()> statistics;
    /// Every metric family to expose (the registry plus PoolMetrics).
    std::function<std::vector<prometheus::MetricFamily>()> metrics;
    /// The MCP tools' actions (resize, drain). Offered only when basic-auth
    /// users are configured: without credentials nobody may change the pool.
    McpServer::Actions actions;
    /// Wall-clock time for the health document's timestamp.
    std::function<std::chrono::system_clock::time_point()> now = [] {
      return std::chrono::system_clock::now();
    };
  };

  /// `authenticator` and `rate_limiter` may be null (no auth, no limit).
  Endpoints(Options options, Sources sources, std::unique_ptr<BasicAuthenticator> authenticator,
            std::unique_ptr<RateLimiter> rate_limiter);

  /// Answers one request. Never throws: a failing source gives a 500.
  HttpResponse handle(const HttpRequest& request) const;

  /// From now on /health answers 503 with status "draining" (the exporter is
  /// stopping). Idempotent.
  void begin_shutdown() noexcept { shutting_down_.store(true); }
  bool shutting_down() const noexcept { return shutting_down_.load(); }

 private:
  HttpResponse route(const HttpRequest& request) const;
  HttpResponse metrics(const HttpRequest& request) const;
  std::shared_ptr<const std::string> fresh_metrics_text() const;
  std::string collect_metrics_text() const;
  HttpResponse health() const;
  HttpResponse landing() const;
  HttpResponse mcp(const HttpRequest& request) const;
  std::optional<HttpResponse> refuse_unauthorized(const HttpRequest& request) const;

  const Options options_;
  const Sources sources_;
  const std::unique_ptr<BasicAuthenticator> authenticator_;
  const std::unique_ptr<RateLimiter> rate_limiter_;
  /// Per-client buckets for requests without cached credentials; null unless
  /// both auth and a rate limit are configured.
  const std::unique_ptr<ClientRateLimiter> client_rate_limiter_;
  McpServer mcp_server_;
  std::atomic<bool> shutting_down_{false};
  mutable std::atomic<std::size_t> mcp_in_progress_{0};
  /// Size of the last metrics page, to reserve the next one's buffer at once.
  mutable std::atomic<std::size_t> metrics_size_hint_{0};
  /// Concurrent scrapes share one collection (see fresh_metrics_text()).
  mutable std::mutex collection_mutex_;
  mutable std::condition_variable collection_done_;
  mutable bool collecting_ = false;                       // guarded by collection_mutex_
  mutable std::uint64_t collections_finished_ = 0;        // guarded by collection_mutex_
  mutable std::shared_ptr<const std::string> last_page_;  // guarded by collection_mutex_
};

/// True when the MCP request's Origin header is acceptable: absent, or naming
/// the host the request was sent to (its Host header), or a loopback host.
/// Guards against DNS rebinding, as the MCP transport specification asks.
bool is_allowed_origin(std::string_view origin, std::string_view host) noexcept;

/// True when an MCP request's Host header is acceptable: absent, an IP
/// literal (a rebinding attack always uses a DNS name), localhost, or a name
/// in `allowed_hosts` (compared without the port, case-insensitively; an
/// entry starting with "." also matches its subdomains).
bool is_allowed_host(std::string_view host, const std::vector<std::string>& allowed_hosts);

}  // namespace poolscope::exporter
