// poolscope-exporter: one pool, its metrics, /health, MCP and a landing page
// on one port. See `poolscope-exporter --help`.

#include <fmt/format.h>
#include <prometheus/registry.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "basic_authenticator.h"
#include "embedded_assets.h"
#include "endpoints.h"
#include "exporter_error.h"
#include "exporter_log.h"
#include "exporter_options.h"
#include "http_server.h"
#include "poolscope/connection.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"
#include "poolscope/pool_metrics.h"
#include "poolscope/version.h"
#include "rate_limiter.h"
#include "redaction.h"
#include "web_config.h"
#include "workload.h"

namespace {

using namespace poolscope;
using namespace poolscope::exporter;

constexpr int kExitUsage = 2;

std::optional<std::string> process_environment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

// Flags are world-readable in /proc/PID/cmdline (ps). Overwrite the
// password of a --database.url flag once it has been parsed; the variable
// DATABASE_URL, which the help recommends, never shows there.
void hide_password_in_arguments(int argc, char** argv, const std::string& password) {
  if (password.empty()) return;
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument(argv[i]);
    char* value = nullptr;
    if (argument.starts_with("--database.url=")) {
      value = argv[i];
    } else if (argument == "--database.url" && i + 1 < argc) {
      value = argv[i + 1];
    }
    if (value == nullptr) continue;
    for (char* at = std::strstr(value, password.c_str()); at != nullptr;
         at = std::strstr(at + password.size(), password.c_str())) {
      std::memset(at, '*', password.size());
    }
  }
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "poolscope-exporter: %s\n", message.c_str());
  return kExitUsage;
}

int print_asset(const std::string& path) {
  const EmbeddedAsset* asset = find_embedded_asset(path);
  if (asset == nullptr || !asset->available) {
    std::fprintf(stderr,
                 "poolscope-exporter: %s was missing when this binary was built; add the file "
                 "and rebuild\n",
                 path.c_str());
    return EXIT_FAILURE;
  }
  std::fwrite(asset->content.data(), 1, asset->content.size(), stdout);
  return std::fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

// Every open connection is a descriptor. Raises the soft limit on open files
// to the hard one (the usual soft default, 1024, would cap the HTTP server far
// below its connection bound) and returns the bound that leaves room for the
// pool's connections and the files the process opens itself.
std::size_t connection_limit(std::size_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return wanted;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  constexpr rlim_t kReserved = 256;
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= wanted + kReserved) return wanted;
  const std::size_t available =
      limit.rlim_cur > 2 * kReserved ? static_cast<std::size_t>(limit.rlim_cur - kReserved) : 64;
  log_event(LogLevel::kWarning, "Open-file limit lowers the HTTP connection bound",
            {{"open_file_limit", static_cast<unsigned long long>(limit.rlim_cur)},
             {"max_connections", available}});
  return available;
}

int serve(const ExporterOptions& options, const sigset_t& stop_signals) {
  configure_exporter_logging(options.pool.log_level, options.log_format);

  WebConfig web_config;
  if (!options.web_config_file.empty()) {
    web_config = WebConfig::load_file(options.web_config_file);
  }
  std::optional<TlsServerSettings> tls;
  if (web_config.tls_enabled) tls = web_config.tls_server_settings();
  std::unique_ptr<BasicAuthenticator> authenticator;
  if (!web_config.basic_auth_users.empty()) {
    authenticator = std::make_unique<BasicAuthenticator>(web_config.basic_auth_users);
  }
  std::unique_ptr<RateLimiter> rate_limiter;
  if (web_config.rate_limit_interval.count() > 0) {
    rate_limiter =
        std::make_unique<RateLimiter>(web_config.rate_limit_interval, web_config.rate_limit_burst);
  }

  auto registry = std::make_shared<prometheus::Registry>();
  PoolMetrics metrics(registry, MetricsOptions{options.metrics_prefix, POOLSCOPE_VERSION});
  Pool pool(options.pool);
  metrics.add(pool);
  log_event(LogLevel::kInfo, "Exporter starting",
            {{"version", POOLSCOPE_VERSION},
             {"pool", options.pool.name},
             {"database", redact_database_url(options.pool.database_url)},
             {"basic_auth", authenticator != nullptr},
             {"telemetry_path", options.telemetry_path}});

  const std::string password = database_password(options.pool.database_url);
  Endpoints::Sources sources;
  sources.statistics = [&pool, password] {
    PoolStatistics stats = pool.get_statistics();
    if (stats.last_error) scrub_secret(*stats.last_error, password);
    return stats;
  };
  sources.metrics = [&registry, &metrics] {
    std::vector<prometheus::MetricFamily> families = registry->Collect();
    std::vector<prometheus::MetricFamily> snapshot = metrics.Collect();
    families.insert(families.end(), std::make_move_iterator(snapshot.begin()),
                    std::make_move_iterator(snapshot.end()));
    return families;
  };
  Endpoints endpoints(
      Endpoints::Options{options.telemetry_path, POOLSCOPE_VERSION, web_config.response_headers},
      std::move(sources), std::move(authenticator), std::move(rate_limiter));

  std::unique_ptr<HttpServer> server;
  try {
    HttpServer::Options server_options;
    server_options.addresses = options.listen_addresses;
    server_options.tls = tls;
    server_options.max_connections = connection_limit(server_options.max_connections);
    server = std::make_unique<HttpServer>(server_options, [&endpoints](const HttpRequest& request) {
      return endpoints.handle(request);
    });
  } catch (const std::exception& error) {
    log_event(LogLevel::kCritical, "Cannot start the HTTP server", {{"error", error.what()}});
    metrics.remove(pool);
    pool.shutdown();
    return EXIT_FAILURE;
  }
  const char* scheme = tls ? "https" : "http";
  for (const ListenAddress& address : server->listening()) {
    const std::string where = address.to_string();
    log_event(LogLevel::kInfo, fmt::format("Listening on {}", where),
              {{"address", where},
               {"tls", tls.has_value()},
               {"metrics", fmt::format("{}://{}{}", scheme, where, options.telemetry_path)},
               {"health", fmt::format("{}://{}/health", scheme, where)}});
  }

  std::unique_ptr<Workload> workload;
  if (options.workload_workers > 0) {
    workload = std::make_unique<Workload>(pool, options.workload_workers, options.workload_hold);
    log_event(LogLevel::kInfo, "Synthetic load started",
              {{"workers", options.workload_workers}, {"hold_ms", options.workload_hold.count()}});
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log_event(LogLevel::kInfo, "Shutting down",
            {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
  // A second SIGTERM/SIGINT (an impatient Ctrl-C) ends the process at once
  // instead of waiting out the pool's shutdown timeout.
  std::thread([stop_signals] {
    int again = 0;
    sigwait(&stop_signals, &again);
    log_event(LogLevel::kWarning, "Second signal: exiting without finishing the graceful shutdown");
    std::_Exit(EXIT_FAILURE);
  }).detach();
  // Readiness first, so load balancers stop sending traffic while the pool
  // drains; the server keeps answering (503) until the pool is closed.
  endpoints.begin_shutdown();
  if (workload) workload->stop();
  pool.shutdown();
  server->stop();
  metrics.remove(pool);
  log_event(LogLevel::kInfo, "Exporter stopped");
  return EXIT_SUCCESS;
}

}  // namespace

int main(int argc, char** argv) {
  ExporterOptions options;
  try {
    options = parse_exporter_options(
        std::span<const char* const>(argv, static_cast<std::size_t>(argc)), process_environment);
  } catch (const UsageError& error) {
    return usage_error(error.what());
  }
  hide_password_in_arguments(argc, argv, database_password(options.pool.database_url));
  switch (options.action) {
    case ExporterOptions::Action::kPrintHelp:
    case ExporterOptions::Action::kPrintVersion:
      std::fputs(options.text.c_str(), stdout);
      return EXIT_SUCCESS;
    case ExporterOptions::Action::kPrintAsset:
      return print_asset(options.asset_path);
    case ExporterOptions::Action::kServe:
      break;
  }

  // Every thread (the pool's, the HTTP server's) inherits this mask, so SIGTERM and
  // SIGINT are only ever received by sigwait() in serve().
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    return serve(options, stop_signals);
  } catch (const UsageError& error) {
    return usage_error(error.what());
  } catch (const ConfigError& error) {
    return usage_error(error.what());
  } catch (const std::exception& error) {
    log_event(LogLevel::kCritical, "Exporter failed", {{"error", error.what()}});
    return EXIT_FAILURE;
  }
}
