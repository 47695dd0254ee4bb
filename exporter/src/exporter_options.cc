#include "exporter_options.h"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <boost/version.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <system_error>
#include <vector>

#include "exporter_error.h"
#include "poolscope/error.h"
#include "poolscope/version.h"

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;

enum class Kind {
  kText,
  kSize,
  kDuration,
  kDurationList,
  kWindow,
  kBool,
  kFraction,
  kLogLevel,
  kQueuePolicy
};

// A flag that mirrors one of PoolConfig::from_env()'s variables.
struct MirroredFlag {
  const char* flag;
  const char* variable;
  Kind kind;
  const char* help;
};

constexpr auto kMirroredFlags = std::to_array<MirroredFlag>({
    {"--database.url", "DATABASE_URL", Kind::kText,
     "PostgreSQL URI or key=value string. Prefer the variable: flags are visible in ps"},
    {"--pool.name", "POOL_NAME", Kind::kText, "value of the pool label (default: default)"},
    {"--pool.application-name", "POOL_APPLICATION_NAME", Kind::kText,
     "application_name of every pool connection, as pg_stat_activity shows it (default: the "
     "URL's application_name, else poolscope)"},
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
    {"--pool.queue-policy", "POOL_QUEUE_POLICY", Kind::kQueuePolicy,
     "barging: a free connection goes to whoever asks first while the longest waiter has "
     "waited less than --pool.barging-wait-bound; fifo: always to the longest waiter "
     "(default: barging)"},
    {"--pool.barging-wait-bound", "POOL_BARGING_WAIT_BOUND", Kind::kDuration,
     "under barging, how long the longest waiter may wait before free connections go to "
     "waiters in arrival order (default: 1ms)"},
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
});

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
    case Kind::kQueuePolicy:
      return "POLICY";
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
    case Kind::kQueuePolicy:
      parse_queue_policy(value, flag);
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
    const auto c = static_cast<unsigned char>(prefix[i]);
    const bool ok = std::isalpha(c) || c == '_' || c == ':' || (i > 0 && std::isdigit(c));
    if (!ok || c > 127) {
      throw UsageError(
          fmt::format("invalid --metrics.prefix='{}': expected a Prometheus metric name prefix "
                      "([a-zA-Z_:][a-zA-Z0-9_:]*), e.g. codebase_mcp_pool_",
                      prefix));
    }
  }
}

// A base URL for links on the landing page: http(s), no trailing slash.
std::string checked_base_url(std::string url, std::string_view flag) {
  auto reject = [&](std::string_view why) {
    return UsageError(fmt::format(
        "invalid {}='{}': {}; expected an http:// or https:// URL such as http://prometheus:9090",
        flag, url, why));
  };
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    throw reject("it must start with http:// or https://");
  }
  for (const char c : url) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte == 127 || c == '"' || c == '<' || c == '>' || c == '\\') {
      throw reject("it must not contain spaces, control characters, quotes, <, > or backslashes");
    }
  }
  while (url.ends_with('/')) url.pop_back();
  if (url == "http:" || url == "https:") throw reject("it has no host");
  return url;
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

// A password file larger than this is not a password.
constexpr std::size_t kMaxPasswordFileBytes = std::size_t{64} * 1024;

// The password of --database.password-file: the file's text without one
// trailing newline (what `echo secret > file` leaves).
std::string read_password_file(const std::string& path, const std::string& source) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw UsageError(fmt::format("cannot read {}='{}': {}", source, path,
                                 std::generic_category().message(errno)));
  }
  std::string password;
  std::array<char, 4096> buffer{};
  for (std::size_t read; (read = std::fread(buffer.data(), 1, buffer.size(), file)) > 0;) {
    password.append(buffer.data(), read);
    if (password.size() > kMaxPasswordFileBytes) break;
  }
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  OPENSSL_cleanse(buffer.data(), buffer.size());
  if (failed) throw UsageError(fmt::format("cannot read {}='{}': read error", source, path));
  if (password.size() > kMaxPasswordFileBytes) {
    throw UsageError(
        fmt::format("invalid {}='{}': larger than 64 KiB; expected a password", source, path));
  }
  if (password.ends_with("\r\n")) {
    password.resize(password.size() - 2);
  } else if (password.ends_with('\n')) {
    password.pop_back();
  }
  if (password.empty()) {
    throw UsageError(
        fmt::format("invalid {}='{}': the file is empty; expected the password", source, path));
  }
  if (password.find('\0') != std::string::npos || password.find('\n') != std::string::npos) {
    throw UsageError(fmt::format("invalid {}='{}': the password must be one line without NUL bytes",
                                 source, path));
  }
  return password;
}

std::string quote_conninfo_value(std::string_view value) {
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

std::vector<std::string> parse_allowed_hosts(const std::string& list) {
  std::vector<std::string> hosts;
  std::string_view rest = list;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    std::string host(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    std::erase_if(host, [](char c) { return c == ' ' || c == '\t'; });
    if (host.empty()) continue;
    for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool bad_character = std::ranges::any_of(host, [](char c) {
      return !(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_');
    });
    if (bad_character || host == ".") {
      throw UsageError(fmt::format(
          "invalid --web.allowed-hosts entry '{}': expected a host name without port or scheme, "
          "such as exporter.example.com, or .example.com for every subdomain",
          host));
    }
    if (host.size() > 1 && host.back() == '.') host.pop_back();
    hosts.push_back(std::move(host));
  }
  return hosts;
}

}  // namespace

std::string with_database_password(const std::string& conninfo, const std::string& password,
                                   const std::string& source) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (error != nullptr) PQfreemem(error);
  if (options == nullptr) {
    throw UsageError(fmt::format(
        "invalid {}: libpq cannot parse it (value not shown: it may contain a password)", source));
  }
  std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)> owner(options, PQconninfoFree);
  std::string result;
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr || *option->val == '\0') continue;
    if (std::string_view(option->keyword) == "password") {
      throw UsageError(fmt::format(
          "{} already holds a password and --database.password-file gives another; remove "
          "one of them",
          source));
    }
    result += fmt::format("{}={} ", option->keyword, quote_conninfo_value(option->val));
  }
  return result + "password=" + quote_conninfo_value(password);
}

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
  std::string runbooks_url(kDefaultRunbooksUrl);
  app.add_option("--landing-page.runbooks-url", runbooks_url,
                 fmt::format("base URL of the runbooks linked from the landing page, one "
                             "<AlertName>.md each (default: {})",
                             kDefaultRunbooksUrl))
      ->type_name("URL")
      ->group("Landing page");
  std::string prometheus_url;
  app.add_option("--landing-page.prometheus-url", prometheus_url,
                 "Prometheus that scrapes this exporter, linked from the landing page "
                 "(default: no link)")
      ->type_name("URL")
      ->group("Landing page");
  std::string alertmanager_url;
  app.add_option("--landing-page.alertmanager-url", alertmanager_url,
                 "Alertmanager that routes this exporter's alerts, linked from the landing page "
                 "(default: no link)")
      ->type_name("URL")
      ->group("Landing page");

  std::string allowed_hosts;
  app.add_option("--web.allowed-hosts", allowed_hosts,
                 "comma-separated host names /mcp answers to (Host header, no port), besides "
                 "IP addresses and localhost; .example.com allows every subdomain. Other names "
                 "get 403, the defence against DNS rebinding (default: none)")
      ->type_name("HOSTS")
      ->group("Web");
  bool public_health = false;
  app.add_flag("--web.unauthenticated-health", public_health,
               "serve /health without credentials when basic auth is on, for load balancer "
               "and Kubernetes probes (default: off, every path needs credentials)")
      ->group("Web");
  std::string shutdown_delay;
  auto* shutdown_delay_option =
      app.add_option("--web.shutdown-delay", shutdown_delay,
                     "after SIGTERM, how long /health answers 503 (status draining) before the "
                     "port closes (default: 250ms; an idle exporter exits right after it)")
          ->type_name("DURATION")
          ->group("Web");
  std::string mcp_max_body;
  auto* mcp_max_body_option =
      app.add_option("--mcp.max-request-bytes", mcp_max_body,
                     "largest /mcp request body; larger ones get 413 (default: 65536)")
          ->type_name("N")
          ->group("Web");
  std::string mcp_max_concurrent;
  auto* mcp_max_concurrent_option =
      app.add_option("--mcp.max-concurrent-requests", mcp_max_concurrent,
                     "most /mcp requests handled at once; more get 503 (default: 4)")
          ->type_name("N")
          ->group("Web");
  std::string password_file;
  auto* password_file_option =
      app.add_option("--database.password-file", password_file,
                     "file holding the database password, read at start; keeps it out of "
                     "DATABASE_URL, flags and the environment (env DATABASE_PASSWORD_FILE)")
          ->type_name("FILE")
          ->group("Pool");

  std::string metrics_naming, server_view_interval, server_view_timeout;
  auto* naming_option =
      app.add_option("--metrics.naming", metrics_naming,
                     "names of the pool metrics: guide (codebase_mcp_pool_…), otel "
                     "(OpenTelemetry db_client_connection_…) or both (env METRICS_NAMING; "
                     "default: guide)")
          ->type_name("NAMING")
          ->group("Web");
  auto* view_interval_option =
      app.add_option("--server-view.interval", server_view_interval,
                     "how often the exporter reads the pool's sessions and the server's "
                     "connection limits from pg_stat_activity, 0 = off (env "
                     "SERVER_VIEW_INTERVAL; default: 30s)")
          ->type_name("DURATION")
          ->group("Server view");
  auto* view_timeout_option =
      app.add_option("--server-view.timeout", server_view_timeout,
                     "statement_timeout of the server view's query (env SERVER_VIEW_TIMEOUT; "
                     "default: 2s)")
          ->type_name("DURATION")
          ->group("Server view");

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
    if (shutdown_delay_option->count() > 0) {
      options.shutdown_delay = parse_duration(shutdown_delay, "--web.shutdown-delay");
      if (options.shutdown_delay > std::chrono::minutes(5)) {
        throw ConfigError("--web.shutdown-delay", shutdown_delay, "expected at most 5m");
      }
    }
    if (mcp_max_body_option->count() > 0) {
      options.mcp_max_body_bytes = parse_size(mcp_max_body, "--mcp.max-request-bytes");
      if (options.mcp_max_body_bytes < 1024 || options.mcp_max_body_bytes > (16u << 20)) {
        throw ConfigError("--mcp.max-request-bytes", mcp_max_body,
                          "expected 1024 to 16777216 bytes");
      }
    }
    if (mcp_max_concurrent_option->count() > 0) {
      options.mcp_max_concurrent = parse_size(mcp_max_concurrent, "--mcp.max-concurrent-requests");
      if (options.mcp_max_concurrent < 1 || options.mcp_max_concurrent > 64) {
        throw ConfigError("--mcp.max-concurrent-requests", mcp_max_concurrent, "expected 1 to 64");
      }
    }
    // A flag wins over its variable; errors name whichever was used.
    auto flag_or_env =
        [&](CLI::Option* option, const std::string& flag_value, const char* flag,
            const char* variable) -> std::optional<std::pair<std::string, std::string>> {
      if (option->count() > 0) return std::pair<std::string, std::string>{flag_value, flag};
      if (auto value = getenv(variable))
        return std::pair<std::string, std::string>{*value, variable};
      return std::nullopt;
    };
    if (auto naming =
            flag_or_env(naming_option, metrics_naming, "--metrics.naming", "METRICS_NAMING")) {
      options.metrics_naming = parse_metrics_naming(naming->first, naming->second);
    }
    if (auto interval = flag_or_env(view_interval_option, server_view_interval,
                                    "--server-view.interval", "SERVER_VIEW_INTERVAL")) {
      options.server_view_interval = parse_duration(interval->first, interval->second);
      if (options.server_view_interval.count() > 0 && options.server_view_interval < 1s) {
        throw ConfigError(interval->second, interval->first,
                          "expected 0 (off) or at least 1s, e.g. 30s");
      }
    }
    if (auto timeout = flag_or_env(view_timeout_option, server_view_timeout,
                                   "--server-view.timeout", "SERVER_VIEW_TIMEOUT")) {
      options.server_view_timeout = parse_duration(timeout->first, timeout->second);
      if (options.server_view_timeout < 1ms || options.server_view_timeout > 60s) {
        throw ConfigError(timeout->second, timeout->first, "expected from 1ms to 60s, e.g. 2s");
      }
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
  const std::string url_source =
      flag_for_variable.count("DATABASE_URL") != 0 ? "--database.url" : "DATABASE_URL";
  check_database_url(options.pool.database_url, url_source);
  std::optional<std::string> password_path;
  std::string password_source = "--database.password-file";
  if (password_file_option->count() > 0) {
    password_path = password_file;
  } else if (auto variable = getenv("DATABASE_PASSWORD_FILE"); variable && !variable->empty()) {
    password_path = std::move(variable);
    password_source = "DATABASE_PASSWORD_FILE";
  }
  if (password_path) {
    std::string password = read_password_file(*password_path, password_source);
    options.pool.database_url =
        with_database_password(options.pool.database_url, password, url_source);
    OPENSSL_cleanse(password.data(), password.size());
  }
  options.allowed_hosts = parse_allowed_hosts(allowed_hosts);
  options.public_health = public_health;
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
  options.runbooks_url = checked_base_url(runbooks_url, "--landing-page.runbooks-url");
  if (!prometheus_url.empty()) {
    options.prometheus_url = checked_base_url(prometheus_url, "--landing-page.prometheus-url");
  }
  if (!alertmanager_url.empty()) {
    options.alertmanager_url =
        checked_base_url(alertmanager_url, "--landing-page.alertmanager-url");
  }
  return options;
}

}  // namespace poolscope::exporter
