#include "exporter_options.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <boost/version.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <optional>
#include <system_error>
#include <vector>

#include "exporter_error.h"
#include "poolscope/connection.h"
#include "poolscope/error.h"
#include "poolscope/pool_setting.h"
#include "poolscope/version.h"

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;

// Which of `names` `parse` reads as `value`: how a default is spelled.
template <typename Value>
std::string spelling(Value value, Value (*parse)(const std::string&, const std::string&),
                     std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (parse(name, name) == value) return name;
  }
  return "";
}

// An exporter setting that, like the pool's, has a flag and a variable.
struct ExporterSetting {
  std::string_view flag;
  std::string_view env;
  std::string_view value_name;
  std::string_view group;
  std::string_view help;
  /// Parses `text` from `source` into `options`; throws ConfigError naming `source`.
  void (*parse)(std::string_view text, const std::string& source, ExporterOptions& options);
  /// The default, from a default-constructed ExporterOptions.
  std::string (*format_default)(const ExporterOptions& defaults);
};

const auto kExporterSettings = std::to_array<ExporterSetting>({
    {"--log.format", "LOG_FORMAT", "FORMAT", "Logging",
     "json (one {timestamp, level, component, message, context} object per line) or text",
     [](std::string_view text, const std::string& source, ExporterOptions& options) {
       options.log_format = parse_log_format(std::string(text), source);
     },
     [](const ExporterOptions& defaults) {
       return spelling(defaults.log_format, parse_log_format, {"json", "text"});
     }},
    {"--metrics.naming", "METRICS_NAMING", "NAMING", "Web",
     "names of the pool metrics: guide (codebase_mcp_pool_...), otel (OpenTelemetry "
     "db_client_connection_...) or both",
     [](std::string_view text, const std::string& source, ExporterOptions& options) {
       options.metrics_naming = parse_metrics_naming(std::string(text), source);
     },
     [](const ExporterOptions& defaults) {
       return spelling(defaults.metrics_naming, parse_metrics_naming, {"guide", "otel", "both"});
     }},
    {"--server-view.interval", "SERVER_VIEW_INTERVAL", "DURATION", "Server view",
     "how often the exporter reads the pool's sessions and the server's connection limits from "
     "pg_stat_activity; 0 turns the server view off",
     [](std::string_view text, const std::string& source, ExporterOptions& options) {
       options.server_view_interval = parse_duration(text, source);
       if (options.server_view_interval > 0ms && options.server_view_interval < 1s) {
         throw ConfigError(source, std::string(text), "expected 0 (off) or at least 1s, e.g. 30s");
       }
     },
     [](const ExporterOptions& defaults) {
       return format_duration(defaults.server_view_interval);
     }},
    {"--server-view.timeout", "SERVER_VIEW_TIMEOUT", "DURATION", "Server view",
     "statement_timeout of the server view's query",
     [](std::string_view text, const std::string& source, ExporterOptions& options) {
       options.server_view_timeout = parse_duration(text, source);
       if (options.server_view_timeout < 1ms || options.server_view_timeout > 60s) {
         throw ConfigError(source, std::string(text), "expected from 1ms to 60s, e.g. 2s");
       }
     },
     [](const ExporterOptions& defaults) { return format_duration(defaults.server_view_timeout); }},
});

// A flag backed by an environment variable, as given on the command line.
struct FlagWithVariable {
  std::string_view flag;
  std::string_view env;
  CLI::Option* option = nullptr;
  std::string value;

  // The flag's value if given, else the variable's; named by whichever gave it.
  std::optional<SettingText> given(const EnvironmentLookup& getenv) const {
    if (option->count() > 0) return SettingText{value, std::string(flag)};
    if (auto text = getenv(std::string(env)))
      return SettingText{std::move(*text), std::string(env)};
    return std::nullopt;
  }
};

// Adds `setting` (a PoolSetting or ExporterSetting) as a flag whose help names
// its variable and default.
template <typename Setting>
void add_flag_with_variable(CLI::App& app, const Setting& setting, std::string_view group,
                            const std::string& default_text, FlagWithVariable& target) {
  target.flag = setting.flag;
  target.env = setting.env;
  target.option = app.add_option(std::string(setting.flag), target.value,
                                 fmt::format("{} (env {}; default: {})", setting.help, setting.env,
                                             default_text))
                      ->type_name(std::string(setting.value_name))
                      ->group(std::string(group));
}

std::string_view pool_flag_group(const PoolSetting& setting) {
  return setting.flag.starts_with("--log.") ? "Logging" : "Pool";
}

std::string require_one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
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

DatabaseUrl with_database_password(const DatabaseUrl& url, const std::string& password,
                                   const std::string& source) {
  if (url.has("password")) {
    throw UsageError(fmt::format(
        "{} already holds a password and --database.password-file gives another; remove "
        "one of them",
        source));
  }
  return url.with("password", password);
}

std::string settings_table_markdown() {
  // A '|' inside a cell would end it.
  const auto cell = [](std::string_view text) {
    std::string escaped;
    for (const char c : text) escaped += c == '|' ? std::string("\\|") : std::string(1, c);
    return escaped;
  };
  std::string table = "| variable | flag | default | meaning |\n| --- | --- | --- | --- |\n";
  const auto row = [&](const auto& setting, const std::string& default_text) {
    table += fmt::format("| `{}` | `{}` | {} | {} |\n", setting.env, setting.flag,
                         cell(default_text), cell(setting.help));
  };
  for (const PoolSetting& setting : pool_settings()) row(setting, setting.default_text());
  const ExporterOptions defaults;
  for (const ExporterSetting& setting : kExporterSettings) {
    row(setting, setting.format_default(defaults));
  }
  return table;
}

std::string version_text() {
  return fmt::format("poolscope-exporter {} (Boost.Beast {}.{}, libpq {})", POOLSCOPE_VERSION,
                     BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, libpq_version());
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

  // Keyed by flag; map nodes stay put, so CLI11 can keep pointers to the values.
  std::map<std::string_view, FlagWithVariable> pool_flags, exporter_flags;
  for (const PoolSetting& setting : pool_settings()) {
    add_flag_with_variable(app, setting, pool_flag_group(setting), setting.default_text(),
                           pool_flags[setting.flag]);
  }
  const ExporterOptions defaults;
  for (const ExporterSetting& setting : kExporterSettings) {
    add_flag_with_variable(app, setting, setting.group, setting.format_default(defaults),
                           exporter_flags[setting.flag]);
  }
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
  bool print_settings_table = false;
  app.add_flag("--print-settings-table", print_settings_table,
               "print every setting that has an environment variable as a Markdown table "
               "(README.md's configuration table) and exit")
      ->group("Operations artefacts");
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
  const int prints =
      int{print_rules} + int{print_alertmanager} + int{print_dashboard} + int{print_settings_table};
  if (prints > 1) {
    throw UsageError(
        "--print-rules, --print-alertmanager-config, --print-dashboard and "
        "--print-settings-table exclude each other; give one");
  }
  if (print_settings_table) {
    options.action = ExporterOptions::Action::kPrintSettingsTable;
    options.text = settings_table_markdown();
    return options;
  }
  if (prints == 1) {
    options.action = ExporterOptions::Action::kPrintAsset;
    options.asset_path = print_rules          ? "rules/codebase-mcp-pool.yml"
                         : print_alertmanager ? "rules/alertmanager.yml"
                                              : "grafana/connection-pool-dashboard.json";
    return options;
  }

  try {
    options.pool = read_pool_config(
        [&](const PoolSetting& setting) { return pool_flags.at(setting.flag).given(getenv); });
    for (const ExporterSetting& setting : kExporterSettings) {
      if (auto given = exporter_flags.at(setting.flag).given(getenv)) {
        setting.parse(given->text, given->source, options);
      }
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
      pool_flags.at("--database.url").option->count() > 0 ? "--database.url" : "DATABASE_URL";
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
