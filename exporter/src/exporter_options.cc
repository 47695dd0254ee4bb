#include "exporter_options.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/version.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <memory>
#include <vector>

#include "exporter_error.h"
#include "poolscope/error.h"
#include "poolscope/version.h"

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;

enum class Kind { kText, kSize, kDuration, kDurationList, kWindow, kBool, kFraction, kLogLevel };

// A flag that mirrors one of PoolConfig::from_env()'s variables.
struct MirroredFlag {
  const char* flag;
  const char* variable;
  Kind kind;
  const char* help;
};

const MirroredFlag kMirroredFlags[] = {
    {"--database.url", "DATABASE_URL", Kind::kText,
     "PostgreSQL URI or key=value string. Prefer the variable: flags are visible in ps"},
    {"--pool.name", "POOL_NAME", Kind::kText, "value of the pool label (default: default)"},
    {"--pool.min-size", "POOL_MIN_SIZE", Kind::kSize, "connections kept open (default: 2)"},
    {"--pool.max-size", "POOL_MAX_SIZE", Kind::kSize, "most connections open (default: 10)"},
    {"--pool.acquire-timeout", "POOL_ACQUIRE_TIMEOUT", Kind::kDuration,
     "how long acquire() waits (default: 30s)"},
    {"--pool.init-timeout", "POOL_INIT_TIMEOUT", Kind::kDuration,
     "time to open min-size connections at start (default: 2s)"},
    {"--pool.max-connection-lifetime", "POOL_MAX_CONNECTION_LIFETIME", Kind::kDuration,
     "recycle connections older than this (default: 1h)"},
    {"--pool.max-idle-time", "POOL_MAX_IDLE_TIME", Kind::kDuration,
     "close idle connections above min-size after this (default: 5m)"},
    {"--pool.command-timeout", "POOL_COMMAND_TIMEOUT", Kind::kDuration,
     "statement_timeout of every connection, 0 = none (default: 60s)"},
    {"--pool.enable-leak-detection", "POOL_ENABLE_LEAK_DETECTION", Kind::kBool,
     "warn about connections held too long (default: true)"},
    {"--pool.leak-detection-timeout", "POOL_LEAK_DETECTION_TIMEOUT", Kind::kDuration,
     "held longer than this counts as a leak (default: 30s)"},
    {"--pool.shutdown-timeout", "POOL_SHUTDOWN_TIMEOUT", Kind::kDuration,
     "graceful shutdown wait for active connections (default: 30s)"},
    {"--pool.validation-idle-threshold", "POOL_VALIDATION_IDLE_THRESHOLD", Kind::kDuration,
     "validate connections idle longer than this before hand-out (default: 1s)"},
    {"--pool.probe-idle-threshold", "POOL_PROBE_IDLE_THRESHOLD", Kind::kDuration,
     "poll the socket of connections idle longer than this before hand-out, 0 = always "
     "(default: 1ms)"},
    {"--pool.health-check-interval", "POOL_HEALTH_CHECK_INTERVAL", Kind::kDuration,
     "background validation period (default: 5s)"},
    {"--pool.degraded-wait-threshold", "POOL_DEGRADED_WAIT_THRESHOLD", Kind::kDuration,
     "a wait longer than this within the health window makes the pool degraded "
     "(default: 100ms)"},
    {"--pool.health-window", "POOL_HEALTH_WINDOW", Kind::kWindow,
     "window of recent errors and peaks for health, whole seconds (default: 60s)"},
    {"--pool.reconnect-backoff", "POOL_RECONNECT_BACKOFF", Kind::kDurationList,
     "reconnection delays, the last repeats (default: 1s,2s,4s,8s,16s)"},
    {"--pool.healthy-headroom", "POOL_HEALTHY_HEADROOM", Kind::kFraction,
     "headroom (max-active)/max at or above which the pool is healthy (default: 0.8)"},
    {"--pool.degraded-headroom", "POOL_DEGRADED_HEADROOM", Kind::kFraction,
     "headroom below which the pool is unhealthy (default: 0.5)"},
    {"--log.level", "LOG_LEVEL", Kind::kLogLevel,
     "DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)"},
};

const char* type_name(Kind kind) {
  switch (kind) {
    case Kind::kText:
      return "TEXT";
    case Kind::kSize:
      return "N";
    case Kind::kDuration:
    case Kind::kWindow:
      return "DURATION";
    case Kind::kDurationList:
      return "DURATIONS";
    case Kind::kBool:
      return "BOOL";
    case Kind::kFraction:
      return "FRACTION";
    case Kind::kLogLevel:
      return "LEVEL";
  }
  return "TEXT";
}

// Checks a flag's value with the flag's name in the error, so that a bad
// flag is reported as the flag rather than as the variable it feeds.
void check_flag_value(Kind kind, const std::string& value, const std::string& flag) {
  switch (kind) {
    case Kind::kText:
      return;
    case Kind::kSize:
      parse_size(value, flag);
      return;
    case Kind::kDuration:
      parse_duration(value, flag);
      return;
    case Kind::kDurationList:
      parse_duration_list(value, flag);
      return;
    case Kind::kWindow:
      parse_window(value, flag);
      return;
    case Kind::kBool:
      parse_bool(value, flag);
      return;
    case Kind::kLogLevel:
      parse_log_level(value, flag);
      return;
    case Kind::kFraction:
      parse_fraction(value, flag);
      return;
  }
}

// "invalid POOL_MIN_SIZE='5': …" -> "invalid --pool.min-size='5': …" when the
// value came from that flag.
UsageError rename_variable(const ConfigError& error,
                           const std::map<std::string, std::string>& flag_for_variable) {
  const std::string message = error.what();
  const auto flag = flag_for_variable.find(error.variable());
  const std::string prefix = "invalid " + error.variable() + "=";
  if (flag != flag_for_variable.end() && message.starts_with(prefix)) {
    return UsageError("invalid " + flag->second + "=" + message.substr(prefix.size()));
  }
  return UsageError(message);
}

std::string require_one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

bool is_port_list(std::string_view ports) {
  // One port per host ("5432,5433"); an empty entry means the default port.
  while (true) {
    const std::size_t comma = ports.find(',');
    const std::string_view port = ports.substr(0, comma);
    if (!port.empty()) {
      int number = 0;
      const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), number);
      if (error != std::errc() || end != port.data() + port.size() || number < 1 ||
          number > 65535) {
        return false;
      }
    }
    if (comma == std::string_view::npos) return true;
    ports.remove_prefix(comma + 1);
  }
}

bool is_integer(std::string_view text) {
  long long number = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

bool is_one_of(std::string_view value, std::initializer_list<std::string_view> accepted) {
  return std::find(accepted.begin(), accepted.end(), value) != accepted.end();
}

// libpq parses the whole string at start but checks some values only when it
// connects; check those now, so that a URL no connection can ever be made
// with stops the exporter (exit 2) instead of leaving a pool retrying forever.
// Values are never shown: a URL missing its '@' turns the password into the
// "port", for example.
void check_database_url(const std::string& url, const std::string& source) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
  // libpq's message may quote the string, password included: never show it.
  if (error != nullptr) PQfreemem(error);
  if (options == nullptr) {
    throw UsageError(fmt::format(
        "invalid {}: libpq cannot parse it (value not shown: it may contain a password); "
        "expected a URI such as postgresql://user:password@host:5432/dbname or key=value pairs",
        source));
  }
  std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)> owner(options, PQconninfoFree);
  auto reject = [&](std::string_view keyword, std::string_view accepted) {
    return UsageError(
        fmt::format("invalid {}: its {} is not {} (value not shown: the URL may "
                    "contain a password)",
                    source, keyword, accepted));
  };
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string_view keyword = option->keyword;
    const std::string_view value = option->val;
    if (keyword == "port" && !is_port_list(value)) {
      throw reject(keyword, "a port number from 1 to 65535 (one per host, comma-separated)");
    }
    if ((keyword == "connect_timeout" || keyword == "keepalives" || keyword == "keepalives_idle" ||
         keyword == "keepalives_interval" || keyword == "keepalives_count" ||
         keyword == "tcp_user_timeout") &&
        !value.empty() && !is_integer(value)) {
      throw reject(keyword, "a whole number");
    }
    if (keyword == "sslmode" && !value.empty() &&
        !is_one_of(value, {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})) {
      throw reject(keyword, "one of disable, allow, prefer, require, verify-ca, verify-full");
    }
    if (keyword == "target_session_attrs" && !value.empty() &&
        !is_one_of(value,
                   {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"})) {
      throw reject(keyword, "one of any, read-write, read-only, primary, standby, prefer-standby");
    }
    if ((keyword == "gssencmode" || keyword == "channel_binding") && !value.empty() &&
        !is_one_of(value, {"disable", "prefer", "require"})) {
      throw reject(keyword, "one of disable, prefer, require");
    }
  }
}

void check_metrics_prefix(const std::string& prefix) {
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(prefix[i]);
    const bool ok = std::isalpha(c) || c == '_' || c == ':' || (i > 0 && std::isdigit(c));
    if (!ok || c > 127) {
      throw UsageError(
          fmt::format("invalid --metrics.prefix='{}': expected a Prometheus metric name prefix "
                      "([a-zA-Z_:][a-zA-Z0-9_:]*), e.g. codebase_mcp_pool_",
                      prefix));
    }
  }
}

void check_telemetry_path(const std::string& path) {
  auto reject = [&](std::string_view why) {
    return UsageError(fmt::format(
        "invalid --web.telemetry-path='{}': {}; expected an absolute path such as /metrics", path,
        why));
  };
  if (path.empty() || path.front() != '/') throw reject("it must start with /");
  if (path.starts_with("//")) throw reject("it must not start with //");
  for (const char c : path) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte == 127 || c == '?' || c == '#' || c == '%') {
      throw reject("it must not contain spaces, control characters, ?, # or %");
    }
  }
  if (path == "/health" || path == "/mcp") throw reject("that path serves another endpoint");
}

}  // namespace

std::string version_text() {
  return fmt::format("poolscope-exporter {} (Boost.Beast {}.{}, libpq {})", POOLSCOPE_VERSION,
                     BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, PQlibVersion());
}

ExporterOptions parse_exporter_options(std::span<const char* const> arguments,
                                       const EnvironmentLookup& getenv) {
  CLI::App app(
      "Serves the statistics of a poolscope PostgreSQL connection pool: Prometheus metrics, "
      "/health and MCP, on one port.\nEvery pool flag has an environment variable (named in "
      "its description); a flag wins over its variable.",
      "poolscope-exporter");
  app.set_help_flag("-h,--help", "print this help and exit");
  app.get_formatter()->column_width(40);
  // As with the Prometheus exporters' flag library, a repeated flag takes the
  // last value (wrappers can append overrides to a base command line).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  std::vector<std::string> mirrored_values(std::size(kMirroredFlags));
  std::vector<CLI::Option*> mirrored_options;
  for (std::size_t i = 0; i < std::size(kMirroredFlags); ++i) {
    const MirroredFlag& flag = kMirroredFlags[i];
    mirrored_options.push_back(
        app.add_option(flag.flag, mirrored_values[i],
                       fmt::format("{} (env {})", flag.help, flag.variable))
            ->type_name(flag.kind == Kind::kText &&
                                flag.variable == std::string_view("DATABASE_URL")
                            ? "URL"
                            : type_name(flag.kind))
            ->group(std::string_view(flag.flag).starts_with("--log") ? "Logging" : "Pool"));
  }
  std::string log_format;
  auto* log_format_option =
      app.add_option("--log.format", log_format, "json or text (env LOG_FORMAT; default: json)")
          ->type_name("FORMAT")
          ->group("Logging");
  std::vector<std::string> listen_addresses;
  app.add_option("--web.listen-address", listen_addresses,
                 "[address]:port to serve every endpoint on (127.0.0.1:9839, [::1]:9839); "
                 "repeat it to listen on several; port 0 picks a free port (default: :9839, "
                 "every IPv4 and IPv6 interface, clear of Prometheus 9090, Alertmanager 9093 "
                 "and the common exporters)")
      ->type_name("ADDRESS")
      ->group("Web");
  std::string telemetry_path = "/metrics";
  app.add_option("--web.telemetry-path", telemetry_path,
                 "path of the Prometheus metrics (default: /metrics)")
      ->type_name("PATH")
      ->group("Web");
  std::string web_config_file;
  app.add_option("--web.config.file", web_config_file,
                 "exporter-toolkit web configuration (basic_auth_users, http_server_config, "
                 "rate_limit); TLS: see docs/tls-proxy.md")
      ->type_name("FILE")
      ->group("Web");
  std::string metrics_prefix = "codebase_mcp_pool_";
  app.add_option("--metrics.prefix", metrics_prefix,
                 "prefix of every metric name (default: codebase_mcp_pool_)")
      ->type_name("PREFIX")
      ->group("Web");

  bool print_rules = false, print_alertmanager = false, print_dashboard = false;
  app.add_flag("--print-rules", print_rules,
               "print the shipped Prometheus rules (rules/codebase-mcp-pool.yml) and exit")
      ->group("Operations artefacts");
  app.add_flag("--print-alertmanager-config", print_alertmanager,
               "print the shipped Alertmanager configuration (rules/alertmanager.yml) and exit")
      ->group("Operations artefacts");
  app.add_flag("--print-dashboard", print_dashboard,
               "print the shipped Grafana dashboard (grafana/connection-pool-dashboard.json) "
               "and exit")
      ->group("Operations artefacts");

  std::string workload_workers, workload_hold;
  auto* workers_option =
      app.add_option("--workload.workers", workload_workers,
                     "synthetic load for demos and tests: threads that keep borrowing "
                     "connections (default: 0 = off)")
          ->type_name("N")
          ->group("Synthetic load");
  auto* hold_option = app.add_option("--workload.hold", workload_hold,
                                     "how long each borrowed connection runs pg_sleep "
                                     "(default: 10ms)")
                          ->type_name("DURATION")
                          ->group("Synthetic load");
  bool show_version = false;
  app.add_flag("--version", show_version, "print the version and exit");

  ExporterOptions options;
  try {
    app.parse(static_cast<int>(arguments.size()), arguments.data());
  } catch (const CLI::CallForHelp&) {
    options.action = ExporterOptions::Action::kPrintHelp;
    options.text = app.help();
    return options;
  } catch (const CLI::ParseError& error) {
    throw UsageError(require_one_line(fmt::format("{}; see --help", error.what())));
  }
  if (show_version) {
    options.action = ExporterOptions::Action::kPrintVersion;
    options.text = version_text() + "\n";
    return options;
  }
  const int prints = int{print_rules} + int{print_alertmanager} + int{print_dashboard};
  if (prints > 1) {
    throw UsageError(
        "--print-rules, --print-alertmanager-config and --print-dashboard "
        "exclude each other; give one");
  }
  if (prints == 1) {
    options.action = ExporterOptions::Action::kPrintAsset;
    options.asset_path = print_rules          ? "rules/codebase-mcp-pool.yml"
                         : print_alertmanager ? "rules/alertmanager.yml"
                                              : "grafana/connection-pool-dashboard.json";
    return options;
  }

  // Flags first (checked under their own names), then the environment.
  std::map<std::string, std::string> flag_values;        // variable -> value
  std::map<std::string, std::string> flag_for_variable;  // variable -> flag
  try {
    for (std::size_t i = 0; i < std::size(kMirroredFlags); ++i) {
      if (mirrored_options[i]->count() == 0) continue;
      const MirroredFlag& flag = kMirroredFlags[i];
      if (flag.kind != Kind::kText) check_flag_value(flag.kind, mirrored_values[i], flag.flag);
      flag_values[flag.variable] = mirrored_values[i];
      flag_for_variable[flag.variable] = flag.flag;
    }
    const auto lookup = [&](const std::string& variable) -> std::optional<std::string> {
      if (const auto found = flag_values.find(variable); found != flag_values.end()) {
        return found->second;
      }
      return getenv(variable);
    };
    try {
      options.pool = PoolConfig::from_env(lookup);
    } catch (const ConfigError& error) {
      throw rename_variable(error, flag_for_variable);
    }
    if (log_format_option->count() > 0) {
      options.log_format = parse_log_format(log_format, "--log.format");
    } else if (const auto variable = getenv("LOG_FORMAT")) {
      options.log_format = parse_log_format(*variable, "LOG_FORMAT");
    }
    if (workers_option->count() > 0) {
      options.workload_workers = parse_size(workload_workers, "--workload.workers");
      if (options.workload_workers > 1000) {
        throw ConfigError("--workload.workers", workload_workers, "expected 0 to 1000");
      }
    }
    if (hold_option->count() > 0) {
      options.workload_hold = parse_duration(workload_hold, "--workload.hold");
    }
  } catch (const UsageError&) {
    throw;
  } catch (const ConfigError& error) {
    throw UsageError(require_one_line(error.what()));
  }

  if (options.pool.database_url.empty()) {
    throw UsageError(
        "missing DATABASE_URL: set the environment variable (or --database.url) to a libpq "
        "URI such as postgresql://user:password@host:5432/dbname");
  }
  check_database_url(options.pool.database_url, flag_for_variable.count("DATABASE_URL") != 0
                                                    ? "--database.url"
                                                    : "DATABASE_URL");
  if (listen_addresses.empty()) listen_addresses.emplace_back(kDefaultListenAddress);
  options.listen_addresses.clear();
  for (const std::string& address : listen_addresses) {
    options.listen_addresses.push_back(ListenAddress::parse(address));
  }
  check_telemetry_path(telemetry_path);
  options.telemetry_path = telemetry_path;
  check_metrics_prefix(metrics_prefix);
  options.metrics_prefix = metrics_prefix;
  options.web_config_file = web_config_file;
  return options;
}

}  // namespace poolscope::exporter
