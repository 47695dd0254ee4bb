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
#include <string>
#include <utility>
#include <vector>

#include "basic_authenticator.h"
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
/// `/health` (the guide's document; 503 when the pool cannot serve or the
/// exporter is shutting down), `/mcp` (McpServer) and `/` (landing page).
/// Unknown paths get 404, wrong methods 405 with Allow. Scrapes that arrive
/// while a collection is running share the next one, so a burst of scrapers
/// costs one collection per round, and no page predates its request. With a rate limit,
/// excess requests get 429; with basic-auth users, requests without valid
/// credentials get 401 with WWW-Authenticate. Responses are built from the
/// Sources only: nothing here touches the database.
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
  };

  /// Where responses come from. Both are called on request threads.
  struct Sources {
    /// A statistics snapshot with no secret in it (cheap, no I/O).
    std::function<PoolStatistics()> statistics;
    /// Every metric family to expose (the registry plus PoolMetrics).
    std::function<std::vector<prometheus::MetricFamily>()> metrics;
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

  /// From now on /health answers 503 (the exporter is stopping). Idempotent.
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

  const Options options_;
  const Sources sources_;
  const std::unique_ptr<BasicAuthenticator> authenticator_;
  const std::unique_ptr<RateLimiter> rate_limiter_;
  McpServer mcp_server_;
  std::atomic<bool> shutting_down_{false};
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

}  // namespace poolscope::exporter
