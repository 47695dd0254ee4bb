#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "listen_address.h"
#include "poolscope/database_url.h"
#include "poolscope/logging.h"
#include "poolscope/pool_config.h"
#include "poolscope/pool_metrics.h"

namespace poolscope::exporter {

/// The default `--web.listen-address`. 9839 is in the exporters' range
/// (9100-9999) and clear of Prometheus (9090), Pushgateway (9091),
/// Alertmanager (9093) and the widely deployed exporters (node 9100,
/// blackbox 9115, postgres 9187, …). That range is fully allocated on the
/// Prometheus wiki, so any port in it is also some rarely seen exporter's;
/// --web.listen-address changes it.
inline constexpr std::string_view kDefaultListenAddress = ":9839";
/// Where the landing page's runbook links point unless configured.
inline constexpr std::string_view kDefaultRunbooksUrl =
    "https://github.com/poolscope/poolscope/blob/main/docs/runbooks";

/// Everything the exporter was asked to do, from flags and the environment
/// (a flag wins over its variable). A plain value.
struct ExporterOptions {
  enum class Action {
    kServe,               ///< run the exporter
    kPrintHelp,           ///< print `text` (--help) and exit 0
    kPrintVersion,        ///< print `text` (--version) and exit 0
    kPrintAsset,          ///< print the embedded artefact `asset_path` and exit
    kPrintSettingsTable,  ///< print `text` (--print-settings-table) and exit 0
  };
  Action action = Action::kServe;
  std::string text;        ///< help, version or settings table text
  std::string asset_path;  ///< for kPrintAsset, e.g. "rules/codebase-mcp-pool.yml"

  PoolConfig pool;  ///< validated; database_url is set when action is kServe
  LogFormat log_format = LogFormat::kJson;
  /// --web.listen-address, once or more.
  std::vector<ListenAddress> listen_addresses{ListenAddress::parse(kDefaultListenAddress)};
  std::string telemetry_path = "/metrics";
  std::string web_config_file;  ///< "" = no web configuration
  std::string metrics_prefix = "codebase_mcp_pool_";
  /// Host names /mcp accepts besides IP literals and localhost (lower case).
  std::vector<std::string> allowed_hosts;
  /// Serve /health without credentials when basic auth is on (for probes).
  bool public_health = false;
  /// Largest /mcp request body (also the HTTP server's body limit).
  std::size_t mcp_max_body_bytes = std::size_t{64} << 10;
  /// Most /mcp requests handled at once.
  std::size_t mcp_max_concurrent = 4;
  /// After SIGTERM, how long /health answers 503 "draining" before the
  /// listener closes (load balancers and probes need to see it).
  std::chrono::milliseconds shutdown_delay{250};
  /// Which names the pool's metrics carry (--metrics.naming, env METRICS_NAMING).
  MetricsNaming metrics_naming = MetricsNaming::kGuide;
  /// Pause between reads of the server view (--server-view.interval, env
  /// SERVER_VIEW_INTERVAL); 0 disables the view.
  std::chrono::milliseconds server_view_interval{30000};
  /// statement_timeout of the server view's query (--server-view.timeout,
  /// env SERVER_VIEW_TIMEOUT).
  std::chrono::milliseconds server_view_timeout{2000};
  /// Synthetic load: threads that keep borrowing connections and running
  /// `SELECT pg_sleep(hold)` (demos and end-to-end tests). 0 = off.
  std::size_t workload_workers = 0;
  std::chrono::milliseconds workload_hold{10};
  /// Landing-page links: runbooks base URL, Prometheus and Alertmanager base
  /// URLs ("" = not shown); http(s), without a trailing slash.
  std::string runbooks_url{kDefaultRunbooksUrl};
  std::string prometheus_url;
  std::string alertmanager_url;
};

/// Looks up an environment variable; nullopt when unset.
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string&)>;

/// Parses the command line (`arguments[0]` is the program name) and the
/// environment. Throws UsageError with one line naming the flag or variable,
/// the value (never the database password) and what is accepted.
ExporterOptions parse_exporter_options(std::span<const char* const> arguments,
                                       const EnvironmentLookup& getenv);

/// `url` with `password` set. Throws UsageError naming `source` when `url`
/// already holds a password.
DatabaseUrl with_database_password(const DatabaseUrl& url, const std::string& password,
                                   const std::string& source);

/// Every setting that has an environment variable (the pool's, then the
/// exporter's own) as a Markdown table: variable, flag, default, meaning.
/// README.md's configuration table is this text (--print-settings-table).
std::string settings_table_markdown();

/// The version line printed by --version.
std::string version_text();

}  // namespace poolscope::exporter
