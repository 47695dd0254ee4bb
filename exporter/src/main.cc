// poolscope-exporter: one pool, its metrics, /health, MCP and a landing page
// on one port. See `poolscope-exporter --help`.

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>  // NOLINT(modernize-deprecated-headers): sigwait etc. are POSIX, not <csignal>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "basic_authenticator.h"
#include "embedded_assets.h"
#include "endpoints.h"
#include "exporter_error.h"
#include "exporter_log.h"
#include "exporter_options.h"
#include "health_document.h"
#include "http_server.h"
#include "poolscope/connection.h"
#include "poolscope/database_url.h"
#include "poolscope/error.h"
#include "poolscope/pool.h"
#include "poolscope/pool_metrics.h"
#include "poolscope/version.h"
#include "rate_limiter.h"
#include "redaction.h"
#include "server_view.h"
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

// Core dumps would hold the database password (a SIGQUIT core did), and a
// dumpable process lets any process of the same user read its memory and
// environment through /proc. Neither is needed to run the exporter.
void disable_core_dumps() {
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

// Flags are world-readable in /proc/PID/cmdline (ps). Overwrite the secrets
// of --database.url as typed (a percent-encoded password too) before
// anything else runs; the options are parsed from a copy. The variable
// DATABASE_URL and --database.password-file never show there.
void hide_secrets_in_arguments(int argc, char** argv) {
  constexpr std::string_view kFlag = "--database.url";
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument(argv[i]);
    if (argument.starts_with(kFlag) && argument.size() > kFlag.size() &&
        argument[kFlag.size()] == '=') {
      mask_connection_secrets(
          std::span<char>(argv[i] + kFlag.size() + 1, argument.size() - kFlag.size() - 1));
    } else if (argument == kFlag && i + 1 < argc) {
      mask_connection_secrets(std::span<char>(argv[i + 1], std::strlen(argv[i + 1])));
    }
  }
}

// Second line of defence once libpq has decoded the URL: any remaining
// occurrence of a secret in a --database.url argument.
void hide_decoded_secrets_in_arguments(int argc, char** argv, const DatabaseUrl& url) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument(argv[i]);
    const bool is_url = argument.starts_with("--database.url=") ||
                        (i > 1 && std::string_view(argv[i - 1]) == "--database.url");
    if (is_url) url.mask_secrets(std::span<char>(argv[i], argument.size()));
  }
}

const char* signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGHUP:
      return "SIGHUP";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "signal";
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

// SIGUSR1: one log line with the pool's statistics, for operators without
// a Prometheus at hand.
void log_statistics(const std::function<PoolStatistics()>& statistics) {
  log_event(LogLevel::kInfo, "Statistics (SIGUSR1)",
            {{"statistics", statistics_document(statistics())}});
}

// Waits for SIGTERM, SIGINT or SIGQUIT; SIGHUP and SIGUSR1 on the way are
// answered without stopping. Returns the stop signal.
int wait_for_stop_signal(const sigset_t& signals,
                         const std::function<PoolStatistics()>& statistics) {
  for (;;) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    switch (signal_number) {
      case SIGHUP:
        log_event(LogLevel::kInfo,
                  "SIGHUP ignored: nothing is reloaded while running; restart the exporter to "
                  "apply configuration changes");
        break;
      case SIGUSR1:
        log_statistics(statistics);
        break;
      default:
        return signal_number;
    }
  }
}

int serve(const ExporterOptions& options, const sigset_t& handled_signals) {
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

  PoolMetrics metrics(
      MetricsOptions{options.metrics_prefix, POOLSCOPE_VERSION, options.metrics_naming});
  Pool pool(options.pool);
  metrics.add(pool);
  std::unique_ptr<ServerView> server_view;
  if (options.server_view_interval.count() > 0) {
    server_view = std::make_unique<ServerView>(
        ServerView::Options{options.pool.database_url, application_name_of(options.pool),
                            options.pool.name, options.pool.max_size, options.server_view_interval,
                            options.server_view_timeout, options.metrics_prefix});
  }
  log_event(LogLevel::kInfo, "Exporter starting",
            {{"version", POOLSCOPE_VERSION},
             {"pool", options.pool.name},
             {"database", options.pool.database_url.redacted()},
             {"basic_auth", authenticator != nullptr},
             {"unauthenticated_health", authenticator != nullptr && options.public_health},
             {"application_name", application_name_of(options.pool)},
             {"telemetry_path", options.telemetry_path}});

  const std::function<PoolStatistics()> statistics = [&pool, url = options.pool.database_url] {
    PoolStatistics stats = pool.get_statistics();
    if (stats.last_error) stats.last_error = url.scrubbed(std::move(*stats.last_error));
    return stats;
  };
  Endpoints::Sources sources;
  sources.statistics = statistics;
  sources.metrics = [&metrics, &server_view] {
    std::vector<prometheus::MetricFamily> families = metrics.Collect();
    if (server_view) {
      std::vector<prometheus::MetricFamily> server = server_view->collect();
      families.insert(families.end(), std::make_move_iterator(server.begin()),
                      std::make_move_iterator(server.end()));
    }
    return families;
  };
  sources.actions.resize = [&pool](std::optional<std::size_t> max_size,
                                   std::optional<std::size_t> min_size) {
    try {
      // Order the two changes so that min_size <= max_size holds after each.
      if (max_size && *max_size >= pool.get_statistics().min_size) {
        pool.set_max_size(*max_size);
        if (min_size) pool.set_min_size(*min_size);
      } else {
        if (min_size) pool.set_min_size(*min_size);
        if (max_size) pool.set_max_size(*max_size);
      }
    } catch (const Error& error) {
      throw McpServer::ActionError(error.what());
    }
    const PoolStatistics stats = pool.get_statistics();
    return nlohmann::json{{"min_size", stats.min_size},
                          {"max_size", stats.max_size},
                          {"total_connections", stats.total_connections},
                          {"active_connections", stats.active_connections}};
  };
  sources.actions.drain = [&pool] {
    Pool::DrainResult result;
    try {
      result = pool.drain();
    } catch (const Error& error) {
      throw McpServer::ActionError(error.what());
    }
    return nlohmann::json{{"closed_idle", result.closed_idle},
                          {"replaced_later", result.replaced_later}};
  };
  Endpoints::Options endpoint_options;
  endpoint_options.telemetry_path = options.telemetry_path;
  endpoint_options.version = POOLSCOPE_VERSION;
  endpoint_options.response_headers = web_config.response_headers;
  endpoint_options.allowed_hosts = options.allowed_hosts;
  endpoint_options.mcp_max_body_bytes = options.mcp_max_body_bytes;
  endpoint_options.mcp_max_concurrent = options.mcp_max_concurrent;
  endpoint_options.public_health = options.public_health;
  endpoint_options.runbooks_url = options.runbooks_url;
  endpoint_options.prometheus_url = options.prometheus_url;
  endpoint_options.alertmanager_url = options.alertmanager_url;
  Endpoints endpoints(std::move(endpoint_options), std::move(sources), std::move(authenticator),
                      std::move(rate_limiter));

  std::unique_ptr<HttpServer> server;
  try {
    HttpServer::Options server_options;
    server_options.addresses = options.listen_addresses;
    server_options.tls = tls;
    server_options.max_connections = connection_limit(server_options.max_connections);
    // /mcp is the only endpoint that reads a body: refuse larger ones before
    // reading them.
    server_options.max_body_bytes = options.mcp_max_body_bytes;
    server = std::make_unique<HttpServer>(server_options, [&endpoints](const HttpRequest& request) {
      return endpoints.handle(request);
    });
  } catch (const std::exception& error) {
    log_event(LogLevel::kCritical,
              fmt::format("Cannot start the HTTP server: {}; if another process uses the "
                          "address, choose another with --web.listen-address",
                          error.what()),
              {{"error", error.what()}});
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

  const int stop_signal = wait_for_stop_signal(handled_signals, statistics);
  log_event(LogLevel::kInfo, "Shutting down", {{"signal", signal_name(stop_signal)}});
  // Signals during the shutdown: an impatient Ctrl-C (a second SIGINT) ends
  // the process at once; a repeated SIGTERM or SIGQUIT is logged and the
  // graceful shutdown goes on. `timeout` and some supervisors send SIGTERM
  // twice (to the child, then to its process group) and report our status,
  // so a repeated SIGTERM must not turn a clean stop into a failure.
  std::thread([handled_signals, statistics] {
    for (;;) {
      int again = 0;
      if (sigwait(&handled_signals, &again) != 0) continue;
      if (again == SIGINT) {
        log_event(LogLevel::kWarning,
                  "Second signal (SIGINT): exiting without finishing the graceful shutdown");
        std::_Exit(128 + SIGINT);
      }
      if (again == SIGUSR1) {
        log_statistics(statistics);
        continue;
      }
      log_event(LogLevel::kInfo, "Already shutting down; signal ignored",
                {{"signal", signal_name(again)}});
    }
  }).detach();
  // Readiness first, so load balancers stop sending traffic while the pool
  // drains; the server keeps answering (/health 503, status draining) until
  // the pool is closed and at least the shutdown delay has passed, so probes
  // see the 503 even when the pool closes at once.
  const auto draining_until = std::chrono::steady_clock::now() + options.shutdown_delay;
  endpoints.begin_shutdown();
  if (workload) workload->stop();
  pool.shutdown();
  std::this_thread::sleep_until(draining_until);
  server->stop();
  server_view.reset();  // after the last scrape that could read it
  metrics.remove(pool);
  log_event(LogLevel::kInfo, "Exporter stopped");
  return EXIT_SUCCESS;
}

}  // namespace

int main(int argc, char** argv) {
  disable_core_dumps();
  // Parse a copy: the originals are what ps shows, and are masked first.
  const std::vector<std::string> arguments(argv, argv + argc);
  hide_secrets_in_arguments(argc, argv);
  std::vector<const char*> argument_pointers;
  argument_pointers.reserve(arguments.size());
  for (const std::string& argument : arguments) argument_pointers.push_back(argument.c_str());

  ExporterOptions options;
  try {
    options = parse_exporter_options(std::span<const char* const>(argument_pointers),
                                     process_environment);
  } catch (const UsageError& error) {
    return usage_error(error.what());
  }
  hide_decoded_secrets_in_arguments(argc, argv, options.pool.database_url);
  switch (options.action) {
    case ExporterOptions::Action::kPrintHelp:
    case ExporterOptions::Action::kPrintVersion:
    case ExporterOptions::Action::kPrintSettingsTable:
      std::fputs(options.text.c_str(), stdout);
      return EXIT_SUCCESS;
    case ExporterOptions::Action::kPrintAsset:
      return print_asset(options.asset_path);
    case ExporterOptions::Action::kServe:
      break;
  }

  // Every thread (the pool's, the HTTP server's) inherits this mask, so these
  // signals are only ever received by sigwait() in serve(): none of them
  // kills the process (SIGQUIT stops it gracefully, without a core).
  sigset_t handled_signals;
  sigemptyset(&handled_signals);
  for (const int signal_number : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1}) {
    sigaddset(&handled_signals, signal_number);
  }
  pthread_sigmask(SIG_BLOCK, &handled_signals, nullptr);

  try {
    return serve(options, handled_signals);
  } catch (const UsageError& error) {
    return usage_error(error.what());
  } catch (const ConfigError& error) {
    return usage_error(error.what());
  } catch (const std::exception& error) {
    log_event(LogLevel::kCritical, "Exporter failed", {{"error", error.what()}});
    return EXIT_FAILURE;
  }
}
