#include "exporter_options.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "exporter_error.h"
#include "poolscope/pool_setting.h"
#include "redaction.h"

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kUrl = "postgresql://poolscope:pw-topsecret@127.0.0.1:5432/poolscope";

struct Fixture {
  std::map<std::string, std::string> environment{{"DATABASE_URL", kUrl}};

  ExporterOptions parse(std::vector<const char*> flags) const {
    flags.insert(flags.begin(), "poolscope-exporter");
    return parse_exporter_options(flags,
                                  [this](const std::string& name) -> std::optional<std::string> {
                                    const auto found = environment.find(name);
                                    if (found == environment.end()) return std::nullopt;
                                    return found->second;
                                  });
  }

  // The UsageError message, or "" when parsing succeeds.
  std::string error(std::vector<const char*> flags) const {
    try {
      parse(std::move(flags));
    } catch (const UsageError& error) {
      return error.what();
    }
    return "";
  }
};

TEST(ExporterOptions, DefaultsNeedOnlyTheDatabaseUrl) {
  const ExporterOptions options = Fixture{}.parse({});
  EXPECT_EQ(options.action, ExporterOptions::Action::kServe);
  EXPECT_TRUE(options.pool.database_url == DatabaseUrl(kUrl));
  EXPECT_EQ(options.pool.max_size, PoolConfig::kDefaultMaxSize);
  ASSERT_EQ(options.listen_addresses.size(), 1u);
  EXPECT_EQ(options.listen_addresses[0].port, 9839);
  EXPECT_EQ(options.listen_addresses[0].host, "");
  EXPECT_EQ(options.telemetry_path, "/metrics");
  EXPECT_EQ(options.metrics_prefix, "codebase_mcp_pool_");
  EXPECT_EQ(options.log_format, LogFormat::kJson);
  EXPECT_EQ(options.workload_workers, 0u);
}

TEST(ExporterOptions, ReadsEveryPoolVariable) {
  Fixture fixture;
  fixture.environment.insert({{"POOL_NAME", "orders"},
                              {"POOL_MIN_SIZE", "1"},
                              {"POOL_MAX_SIZE", "4"},
                              {"POOL_ACQUIRE_TIMEOUT", "500ms"},
                              {"POOL_COMMAND_TIMEOUT", "0"},
                              {"POOL_ENABLE_LEAK_DETECTION", "false"},
                              {"POOL_HEALTHY_HEADROOM", "0.9"},
                              {"LOG_LEVEL", "debug"},
                              {"LOG_FORMAT", "text"}});
  const ExporterOptions options = fixture.parse({});
  EXPECT_EQ(options.pool.name, "orders");
  EXPECT_EQ(options.pool.min_size, 1u);
  EXPECT_EQ(options.pool.max_size, 4u);
  EXPECT_EQ(options.pool.acquire_timeout, 500ms);
  EXPECT_EQ(options.pool.command_timeout, 0ms);
  EXPECT_FALSE(options.pool.enable_leak_detection);
  EXPECT_DOUBLE_EQ(options.pool.healthy_headroom, 0.9);
  EXPECT_EQ(options.pool.log_level, LogLevel::kDebug);
  EXPECT_EQ(options.log_format, LogFormat::kText);
}

TEST(ExporterOptions, FlagsWinOverVariables) {
  Fixture fixture;
  fixture.environment["POOL_MAX_SIZE"] = "4";
  fixture.environment["LOG_FORMAT"] = "text";
  const ExporterOptions options = fixture.parse(
      {"--pool.max-size=7", "--pool.acquire-timeout", "2m", "--log.format=json",
       "--database.url=postgresql://other@db/x", "--pool.enable-leak-detection=off",
       "--pool.reconnect-backoff=100ms,1s", "--pool.health-window=30s",
       "--pool.degraded-wait-threshold=250ms", "--web.listen-address=127.0.0.1:0",
       "--web.telemetry-path=/prom", "--metrics.prefix=svc_", "--workload.workers=3",
       "--workload.hold=5ms", "--pool.queue-policy=fifo", "--pool.barging-wait-bound=3ms"});
  EXPECT_EQ(options.pool.max_size, 7u);
  EXPECT_EQ(options.pool.queue_policy, QueuePolicy::kFifo);
  EXPECT_EQ(options.pool.barging_wait_bound, 3ms);
  EXPECT_EQ(options.pool.acquire_timeout, 2min);
  EXPECT_EQ(options.log_format, LogFormat::kJson);
  EXPECT_TRUE(options.pool.database_url == DatabaseUrl("postgresql://other@db/x"));
  EXPECT_FALSE(options.pool.enable_leak_detection);
  EXPECT_EQ(options.pool.reconnect_backoff, (std::vector<std::chrono::milliseconds>{100ms, 1s}));
  EXPECT_EQ(options.pool.health_window, 30s);
  EXPECT_EQ(options.pool.degraded_wait_threshold, 250ms);
  ASSERT_EQ(options.listen_addresses.size(), 1u);
  EXPECT_EQ(options.listen_addresses[0].host, "127.0.0.1");
  EXPECT_EQ(options.listen_addresses[0].port, 0);
  EXPECT_EQ(options.telemetry_path, "/prom");
  EXPECT_EQ(options.metrics_prefix, "svc_");
  EXPECT_EQ(options.workload_workers, 3u);
  EXPECT_EQ(options.workload_hold, 5ms);
}

TEST(ExporterOptions, BadFlagValueNamesTheFlagTheValueAndWhatIsAccepted) {
  const std::string error = Fixture{}.error({"--pool.max-size=lots"});
  EXPECT_THAT(error, HasSubstr("--pool.max-size"));
  EXPECT_THAT(error, HasSubstr("lots"));
  EXPECT_THAT(error, HasSubstr("expected"));
}

TEST(ExporterOptions, BadVariableNamesTheVariable) {
  Fixture fixture;
  fixture.environment["POOL_ACQUIRE_TIMEOUT"] = "soon";
  const std::string error = fixture.error({});
  EXPECT_THAT(error, HasSubstr("POOL_ACQUIRE_TIMEOUT"));
  EXPECT_THAT(error, HasSubstr("soon"));
}

TEST(ExporterOptions, CrossFieldErrorsNameTheFlagThatWasGiven) {
  EXPECT_EQ(Fixture{}.error({"--pool.min-size=20"}),
            "invalid --pool.min-size='20': must not exceed POOL_MAX_SIZE (10)");
  Fixture fixture;
  fixture.environment["POOL_MIN_SIZE"] = "5";
  EXPECT_EQ(fixture.error({"--pool.max-size=3"}),
            "invalid POOL_MIN_SIZE='5': must not exceed --pool.max-size (3)");
}

TEST(ExporterOptions, AFlagErrorNamesTheFlagAndNotItsVariable) {
  Fixture fixture;
  fixture.environment["POOL_MAX_SIZE"] = "4";  // the flag wins, so the flag is named
  EXPECT_EQ(fixture.error({"--pool.max-size=0"}),
            "invalid --pool.max-size='0': expected a whole number from 1 to 10000");
  EXPECT_EQ(fixture.error({"--pool.health-window=1500ms"}),
            "invalid --pool.health-window='1500ms': expected whole seconds from 1s to 600s, "
            "e.g. 60s");
  fixture.environment["SERVER_VIEW_TIMEOUT"] = "2m";
  EXPECT_EQ(fixture.error({}),
            "invalid SERVER_VIEW_TIMEOUT='2m': expected from 1ms to 60s, e.g. 2s");
}

TEST(ExporterOptions, HelpShowsEveryPoolSettingWithItsVariableAndDefault) {
  const std::string help = Fixture{}.parse({"--help"}).text;
  for (const PoolSetting& setting : pool_settings()) {
    EXPECT_THAT(help, HasSubstr(std::string(setting.flag) + " " + std::string(setting.value_name)));
    EXPECT_THAT(help, HasSubstr(fmt::format("{} (env {}; default: {})", setting.help, setting.env,
                                            setting.default_text())));
  }
  EXPECT_THAT(help, HasSubstr("(env POOL_MAX_SIZE; default: 10)"));
  EXPECT_THAT(help, HasSubstr("(env SERVER_VIEW_INTERVAL; default: 30s)"));
  EXPECT_THAT(help, HasSubstr("(env LOG_FORMAT; default: json)"));
}

TEST(ExporterOptions, EveryValueFlagRejectsGarbage) {
  for (const char* flag : {"--pool.min-size",
                           "--pool.max-size",
                           "--pool.acquire-timeout",
                           "--pool.init-timeout",
                           "--pool.max-connection-lifetime",
                           "--pool.max-idle-time",
                           "--pool.command-timeout",
                           "--pool.enable-leak-detection",
                           "--pool.leak-detection-timeout",
                           "--pool.shutdown-timeout",
                           "--pool.validation-idle-threshold",
                           "--pool.queue-policy",
                           "--pool.barging-wait-bound",
                           "--pool.health-check-interval",
                           "--pool.healthy-headroom",
                           "--pool.degraded-headroom",
                           "--log.level",
                           "--log.format",
                           "--pool.degraded-wait-threshold",
                           "--pool.health-window",
                           "--pool.reconnect-backoff",
                           "--workload.workers",
                           "--workload.hold",
                           "--web.listen-address",
                           "--web.telemetry-path",
                           "--metrics.prefix",
                           "--metrics.naming",
                           "--server-view.interval",
                           "--server-view.timeout"}) {
    const std::string argument = std::string(flag) + "=%garbage%";
    const std::string error = Fixture{}.error({argument.c_str()});
    EXPECT_THAT(error, HasSubstr(flag)) << flag;
    EXPECT_THAT(error, HasSubstr("%garbage%")) << flag;
    EXPECT_EQ(error.find('\n'), std::string::npos) << flag;
  }
}

TEST(ExporterOptions, NamingAndServerViewDefaultsFlagsAndVariables) {
  const ExporterOptions defaults = Fixture{}.parse({});
  EXPECT_EQ(defaults.metrics_naming, MetricsNaming::kGuide);
  EXPECT_EQ(defaults.server_view_interval, 30s);
  EXPECT_EQ(defaults.server_view_timeout, 2s);
  EXPECT_EQ(defaults.pool.application_name, "");

  Fixture fixture;
  fixture.environment["METRICS_NAMING"] = "otel";
  fixture.environment["SERVER_VIEW_INTERVAL"] = "0";
  fixture.environment["SERVER_VIEW_TIMEOUT"] = "500ms";
  fixture.environment["POOL_APPLICATION_NAME"] = "orders-api";
  const ExporterOptions from_env = fixture.parse({});
  EXPECT_EQ(from_env.metrics_naming, MetricsNaming::kOtel);
  EXPECT_EQ(from_env.server_view_interval, 0ms);
  EXPECT_EQ(from_env.server_view_timeout, 500ms);
  EXPECT_EQ(from_env.pool.application_name, "orders-api");

  const ExporterOptions flags = fixture.parse(
      {"--metrics.naming=both", "--server-view.interval=1m", "--pool.application-name=billing"});
  EXPECT_EQ(flags.metrics_naming, MetricsNaming::kBoth);
  EXPECT_EQ(flags.server_view_interval, 60s);
  EXPECT_EQ(flags.pool.application_name, "billing");
}

TEST(ExporterOptions, ServerViewBoundsNameTheFlagOrVariable) {
  EXPECT_THAT(Fixture{}.error({"--server-view.interval=100ms"}),
              AllOf(HasSubstr("--server-view.interval"), HasSubstr("at least 1s")));
  EXPECT_THAT(Fixture{}.error({"--server-view.timeout=0"}),
              AllOf(HasSubstr("--server-view.timeout"), HasSubstr("from 1ms to 60s")));
  Fixture fixture;
  fixture.environment["METRICS_NAMING"] = "opentelemetry";
  EXPECT_THAT(fixture.error({}), AllOf(HasSubstr("METRICS_NAMING"), HasSubstr("opentelemetry")));
  fixture.environment.erase("METRICS_NAMING");
  fixture.environment["POOL_APPLICATION_NAME"] = std::string(64, 'a');
  EXPECT_THAT(fixture.error({}), AllOf(HasSubstr("POOL_APPLICATION_NAME"), HasSubstr("63")));
}

TEST(ExporterOptions, UnknownFlagIsAUsageError) {
  EXPECT_THAT(Fixture{}.error({"--pool.maxsize=3"}), HasSubstr("--pool.maxsize"));
  EXPECT_THAT(Fixture{}.error({"stray"}), HasSubstr("stray"));
}

TEST(ExporterOptions, DatabaseUrlIsRequired) {
  Fixture fixture;
  fixture.environment.clear();
  EXPECT_THAT(fixture.error({}), HasSubstr("DATABASE_URL"));
}

TEST(ExporterOptions, UnparseableDatabaseUrlIsNotEchoed) {
  Fixture fixture;
  fixture.environment["DATABASE_URL"] = "host=db password pw-topsecret";
  const std::string error = fixture.error({});
  EXPECT_THAT(error, HasSubstr("DATABASE_URL"));
  EXPECT_THAT(error, Not(HasSubstr("pw-topsecret")));
  const std::string flag_error =
      Fixture{}.error({"--database.url=postgresql://u:pw-topsecret@h/db?bogus=1"});
  EXPECT_THAT(flag_error, HasSubstr("--database.url"));
  EXPECT_THAT(flag_error, Not(HasSubstr("pw-topsecret")));
}

TEST(ExporterOptions, DatabaseUrlsNoConnectionCanUseAreRejectedWithoutEchoingThem) {
  const std::string base = "postgresql://poolscope:pw-topsecret@127.0.0.1";
  for (const std::string suffix :
       {":notaport/db", ":99999999/db", ":-1/db", ":5432/db?sslmode=bogus",
        ":5432/db?connect_timeout=soon", ":5432/db?target_session_attrs=bogus",
        ":5432/db?gssencmode=always"}) {
    Fixture fixture;
    fixture.environment["DATABASE_URL"] = base + suffix;
    const std::string error = fixture.error({});
    EXPECT_THAT(error, HasSubstr("DATABASE_URL")) << suffix;
    EXPECT_THAT(error, Not(HasSubstr("pw-topsecret"))) << suffix;
  }
  // A URL missing its '@' makes the password the "port": still not shown.
  Fixture fixture;
  fixture.environment["DATABASE_URL"] = "postgresql://poolscope:pw-topsecret/db";
  EXPECT_THAT(fixture.error({}), AllOf(HasSubstr("port"), Not(HasSubstr("pw-topsecret"))));
}

TEST(ExporterOptions, DatabaseUrlsLibpqAcceptsStayAccepted) {
  for (const std::string url :
       {"postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgresql://u@h/db?sslmode=verify-full&connect_timeout=5", "host=/tmp dbname=x",
        "postgresql:///db", "postgresql://u@h1,h2:5433/db"}) {
    Fixture fixture;
    fixture.environment["DATABASE_URL"] = url;
    EXPECT_EQ(fixture.error({}), "") << url;
  }
}

TEST(ExporterOptions, ListenAddressForms) {
  auto only = [](const ExporterOptions& options) {
    EXPECT_EQ(options.listen_addresses.size(), 1u);
    return options.listen_addresses.at(0).to_string();
  };
  EXPECT_EQ(only(Fixture{}.parse({"--web.listen-address=:9000"})), ":9000");
  EXPECT_EQ(only(Fixture{}.parse({"--web.listen-address=localhost:9000"})), "127.0.0.1:9000");
  EXPECT_EQ(only(Fixture{}.parse({"--web.listen-address=[::1]:9000"})), "[::1]:9000");
  EXPECT_EQ(only(Fixture{}.parse({"--web.listen-address=[::]:9000"})), "[::]:9000");
  const ExporterOptions several =
      Fixture{}.parse({"--web.listen-address=127.0.0.1:9000", "--web.listen-address=[::1]:9001"});
  ASSERT_EQ(several.listen_addresses.size(), 2u);
  EXPECT_EQ(several.listen_addresses[0].to_string(), "127.0.0.1:9000");
  EXPECT_EQ(several.listen_addresses[1].to_string(), "[::1]:9001");
  EXPECT_THAT(Fixture{}.error({"--web.listen-address=::1:9000"}), HasSubstr("brackets"));
  EXPECT_THAT(Fixture{}.error({"--web.listen-address=[::1:9000"}), HasSubstr("']'"));
  EXPECT_THAT(Fixture{}.error({"--web.listen-address=[1.2.3.4]:9000"}), HasSubstr("IPv6"));
  EXPECT_THAT(Fixture{}.error({"--web.listen-address=:70000"}), HasSubstr("0 to 65535"));
  EXPECT_THAT(Fixture{}.error({"--web.listen-address=db.example:9000"}), HasSubstr("IPv4"));
}

TEST(ExporterOptions, TelemetryPathMustBeAFreeAbsolutePath) {
  for (const char* path : {"metrics", "//evil.example/x", "/health", "/mcp", "/a b", "/a?b"}) {
    const std::string argument = std::string("--web.telemetry-path=") + path;
    EXPECT_THAT(Fixture{}.error({argument.c_str()}), HasSubstr("--web.telemetry-path")) << path;
  }
}

TEST(ExporterOptions, LandingPageLinksAreHttpUrlsWithoutATrailingSlash) {
  const ExporterOptions defaults = Fixture{}.parse({});
  EXPECT_EQ(defaults.runbooks_url, kDefaultRunbooksUrl);
  EXPECT_EQ(defaults.prometheus_url, "");
  EXPECT_EQ(defaults.alertmanager_url, "");
  const ExporterOptions options = Fixture{}.parse(
      {"--landing-page.prometheus-url=http://prom:9090/", "--landing-page.alertmanager-url",
       "https://am.example", "--landing-page.runbooks-url=https://wiki.example/runbooks/"});
  EXPECT_EQ(options.prometheus_url, "http://prom:9090");
  EXPECT_EQ(options.alertmanager_url, "https://am.example");
  EXPECT_EQ(options.runbooks_url, "https://wiki.example/runbooks");
  EXPECT_THAT(Fixture{}.error({"--landing-page.prometheus-url=prom:9090"}),
              AllOf(HasSubstr("--landing-page.prometheus-url='prom:9090'"),
                    HasSubstr("http:// or https://")));
  EXPECT_THAT(Fixture{}.error({"--landing-page.alertmanager-url=http://a\"b"}),
              HasSubstr("--landing-page.alertmanager-url"));
  EXPECT_THAT(Fixture{}.error({"--landing-page.runbooks-url=https://"}),
              HasSubstr("--landing-page.runbooks-url"));
}

TEST(ExporterOptions, HelpAndVersionNeedNoDatabase) {
  Fixture fixture;
  fixture.environment.clear();
  const ExporterOptions help = fixture.parse({"--help"});
  EXPECT_EQ(help.action, ExporterOptions::Action::kPrintHelp);
  EXPECT_THAT(help.text, HasSubstr("--web.listen-address"));
  EXPECT_THAT(help.text, HasSubstr("POOL_MAX_SIZE"));
  const ExporterOptions version = fixture.parse({"--version"});
  EXPECT_EQ(version.action, ExporterOptions::Action::kPrintVersion);
  EXPECT_THAT(version.text, HasSubstr("poolscope-exporter"));
}

TEST(ExporterOptions, PrintSettingsTableListsEverySettingWithItsDefaultAndNeedsNoDatabase) {
  Fixture fixture;
  fixture.environment.clear();
  const ExporterOptions printed = fixture.parse({"--print-settings-table"});
  EXPECT_EQ(printed.action, ExporterOptions::Action::kPrintSettingsTable);
  EXPECT_EQ(printed.text, settings_table_markdown());
  EXPECT_TRUE(printed.text.starts_with("| variable | flag | default | meaning |\n"));
  for (const PoolSetting& setting : pool_settings()) {
    EXPECT_THAT(printed.text, HasSubstr(fmt::format("| `{}` | `{}` | {} | ", setting.env,
                                                    setting.flag, setting.default_text())));
  }
  EXPECT_THAT(printed.text, HasSubstr("| `SERVER_VIEW_TIMEOUT` | `--server-view.timeout` | 2s |"));
  EXPECT_THAT(fixture.error({"--print-settings-table", "--print-rules"}),
              HasSubstr("exclude each other"));
}

TEST(ExporterOptions, PrintFlagsSelectTheEmbeddedArtefact) {
  Fixture fixture;
  fixture.environment.clear();
  EXPECT_EQ(fixture.parse({"--print-rules"}).asset_path, "rules/codebase-mcp-pool.yml");
  EXPECT_EQ(fixture.parse({"--print-alertmanager-config"}).asset_path, "rules/alertmanager.yml");
  EXPECT_EQ(fixture.parse({"--print-dashboard"}).asset_path,
            "grafana/connection-pool-dashboard.json");
  EXPECT_THAT(fixture.error({"--print-rules", "--print-dashboard"}), HasSubstr("exclude"));
}

std::string write_file(const std::string& text) {
  char path[] = "/tmp/poolscope-options-test.XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  if (write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    close(fd);
    throw std::runtime_error("write failed");
  }
  close(fd);
  return path;
}

TEST(ExporterOptions, PasswordFileSetsThePasswordOfAUrlWithout) {
  const std::string path = write_file("file pass'word\\\n");
  Fixture fixture;
  fixture.environment["DATABASE_URL"] = "postgresql://poolscope@127.0.0.1:5432/poolscope";
  const std::string flag = "--database.password-file=" + path;
  const ExporterOptions options = fixture.parse({flag.c_str()});
  const DatabaseUrl expected(
      "host=127.0.0.1 port=5432 dbname=poolscope user=poolscope "
      "password='file pass\\'word\\\\'");
  EXPECT_TRUE(options.pool.database_url == expected);
  // The variable works the same way.
  fixture.environment["DATABASE_PASSWORD_FILE"] = path;
  EXPECT_TRUE(fixture.parse({}).pool.database_url == expected);
  std::remove(path.c_str());
}

TEST(ExporterOptions, PasswordFileErrorsNameTheFileAndNeverShowThePassword) {
  EXPECT_THAT(Fixture{}.error({"--database.password-file=/nonexistent/pw"}),
              HasSubstr("cannot read --database.password-file='/nonexistent/pw'"));
  const std::string path = write_file("second-secret\n");
  const std::string flag = "--database.password-file=" + path;
  const std::string both = Fixture{}.error({flag.c_str()});  // kUrl has a password already
  EXPECT_THAT(both, HasSubstr("already holds a password"));
  EXPECT_THAT(both, Not(HasSubstr("topsecret")));
  EXPECT_THAT(both, Not(HasSubstr("second-secret")));
  std::remove(path.c_str());
  const std::string empty = write_file("\n");
  const std::string empty_flag = "--database.password-file=" + empty;
  Fixture fixture;
  fixture.environment["DATABASE_URL"] = "host=h";
  EXPECT_THAT(fixture.error({empty_flag.c_str()}), HasSubstr("the file is empty"));
  std::remove(empty.c_str());
}

TEST(ExporterOptions, AllowedHostsAreLowerCasedAndCheckedForShape) {
  const ExporterOptions options =
      Fixture{}.parse({"--web.allowed-hosts=Exporter.Example, .svc.cluster.local"});
  EXPECT_EQ(options.allowed_hosts,
            (std::vector<std::string>{"exporter.example", ".svc.cluster.local"}));
  EXPECT_TRUE(Fixture{}.parse({}).allowed_hosts.empty());
  for (const char* bad : {"--web.allowed-hosts=exporter:9839", "--web.allowed-hosts=http://x",
                          "--web.allowed-hosts=."}) {
    EXPECT_THAT(Fixture{}.error({bad}), HasSubstr("invalid --web.allowed-hosts entry")) << bad;
  }
}

TEST(ExporterOptions, HardeningFlagsHaveDefaultsAndBounds) {
  const ExporterOptions defaults = Fixture{}.parse({});
  EXPECT_FALSE(defaults.public_health);
  EXPECT_EQ(defaults.mcp_max_body_bytes, 65536u);
  EXPECT_EQ(defaults.mcp_max_concurrent, 4u);
  EXPECT_EQ(defaults.shutdown_delay, std::chrono::milliseconds(250));
  const ExporterOptions set =
      Fixture{}.parse({"--web.unauthenticated-health", "--mcp.max-request-bytes=4096",
                       "--mcp.max-concurrent-requests=2", "--web.shutdown-delay=2s"});
  EXPECT_TRUE(set.public_health);
  EXPECT_EQ(set.mcp_max_body_bytes, 4096u);
  EXPECT_EQ(set.mcp_max_concurrent, 2u);
  EXPECT_EQ(set.shutdown_delay, std::chrono::seconds(2));
  EXPECT_THAT(Fixture{}.error({"--mcp.max-request-bytes=10"}),
              HasSubstr("--mcp.max-request-bytes"));
  EXPECT_THAT(Fixture{}.error({"--mcp.max-concurrent-requests=0"}),
              HasSubstr("--mcp.max-concurrent-requests"));
  EXPECT_THAT(Fixture{}.error({"--web.shutdown-delay=1h"}), HasSubstr("--web.shutdown-delay"));
}

}  // namespace
}  // namespace poolscope::exporter
