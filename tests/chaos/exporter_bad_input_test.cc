// Hostile input for poolscope-exporter: invalid configuration (exit 2, one
// line naming the variable or flag), malformed HTTP and JSON-RPC (the right
// status, and the exporter keeps serving), and the database password, which
// must never show up in what the exporter prints or serves.

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>

#include "chaos_support.h"

namespace poolscope::chaos {
namespace {

using nlohmann::json;

// ------------------------------------------------------------ the process

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

/// A poolscope-exporter child with a clean environment (PATH plus what the
/// test gives), stdout and stderr in files.
class Exporter {
 public:
  Exporter(const std::vector<std::string>& arguments,
           const std::vector<std::pair<std::string, std::string>>& environment) {
    char pattern[] = "/tmp/poolscope-exporter-chaos.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    std::vector<std::string> argv_storage{POOLSCOPE_EXPORTER};
    argv_storage.insert(argv_storage.end(), arguments.begin(), arguments.end());
    std::vector<std::string> env_storage{"PATH=/usr/bin:/bin"};
    for (const auto& [name, value] : environment) env_storage.push_back(name + "=" + value);
    std::vector<char*> argv, envp;
    for (auto& item : argv_storage) argv.push_back(item.data());
    argv.push_back(nullptr);
    for (auto& item : env_storage) envp.push_back(item.data());
    envp.push_back(nullptr);
    const std::string out = dir_ + "/stdout", err = dir_ + "/stderr";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int null_fd = ::open("/dev/null", O_RDONLY);
      ::dup2(null_fd, 0);
      ::dup2(out_fd, 1);
      ::dup2(err_fd, 2);
      // Signals blocked in the test's threads must not stay blocked here.
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
  }

  ~Exporter() {
    if (!exit_code_ && pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  /// The exit code once the process ended within `limit`; nullopt while it runs.
  std::optional<int> wait(std::chrono::milliseconds limit) {
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (!exit_code_) {
      int status = 0;
      const pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (std::chrono::steady_clock::now() > give_up) break;
      std::this_thread::sleep_for(5ms);
    }
    return exit_code_;
  }

  void signal(int number) { ::kill(pid_, number); }
  std::string standard_error() const { return read_file(dir_ + "/stderr"); }
  std::string standard_output() const { return read_file(dir_ + "/stdout"); }

  /// The port from the "Listening on" log line, once it is there.
  int port(std::chrono::milliseconds limit = 20s) {
    static const std::regex listening("Listening on [0-9.]+:([0-9]+)");
    int found = 0;
    eventually(
        [&] {
          std::smatch match;
          const std::string text = standard_error();
          if (std::regex_search(text, match, listening)) found = std::stoi(match[1]);
          return found != 0 || wait(0ms).has_value();
        },
        limit);
    return found;
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// ------------------------------------------------------------ raw HTTP

struct RawResponse {
  int status = 0;  ///< 0: the server closed the connection without answering
  std::string head;
  std::string body;
  std::string raw;
};

/// Sends `request` as is on a fresh connection and reads one response: up to
/// Content-Length, the server closing, or `limit` passing.
RawResponse http_exchange(int port, std::string_view request, bool close_write = false,
                          std::chrono::milliseconds limit = 5s) {
  RawResponse response;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return response;
  }
  // The server may answer (413, 400) and close before reading everything.
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  if (close_write) ::shutdown(fd, SHUT_WR);
  const auto give_up = std::chrono::steady_clock::now() + limit;
  std::size_t expected_total = std::string::npos;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd descriptor{fd, POLLIN, 0};
    if (::poll(&descriptor, 1, static_cast<int>(left.count())) <= 0) break;
    char buffer[65536];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    response.raw.append(buffer, static_cast<std::size_t>(n));
    const std::size_t end_of_head = response.raw.find("\r\n\r\n");
    if (expected_total == std::string::npos && end_of_head != std::string::npos) {
      static const std::regex length("\r\n[Cc]ontent-[Ll]ength: *([0-9]+)");
      std::smatch match;
      const std::string head = response.raw.substr(0, end_of_head);
      if (std::regex_search(head, match, length)) {
        expected_total = end_of_head + 4 + std::stoul(match[1]);
      }
    }
    if (expected_total != std::string::npos && response.raw.size() >= expected_total) break;
  }
  ::close(fd);
  static const std::regex status_line("^HTTP/[0-9.]+ ([0-9]{3})");
  std::smatch match;
  if (std::regex_search(response.raw, match, status_line)) response.status = std::stoi(match[1]);
  const std::size_t end_of_head = response.raw.find("\r\n\r\n");
  if (end_of_head != std::string::npos) {
    response.head = response.raw.substr(0, end_of_head);
    response.body = response.raw.substr(end_of_head + 4);
  }
  return response;
}

std::string get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers +
         "Connection: close\r\n\r\n";
}

std::string post_mcp(const std::string& body, const std::string& extra_headers = "") {
  return "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
         "Accept: application/json, text/event-stream\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

/// An exporter serving a pool on `url`, ready (/health 200).
struct ServingExporter {
  ServingExporter(const std::string& url, std::vector<std::string> extra_arguments = {}) {
    std::vector<std::string> arguments{"--web.listen-address=127.0.0.1:0", "--log.level=DEBUG",
                                       "--pool.reconnect-backoff=100ms,200ms,400ms",
                                       "--pool.health-window=1s",
                                       "--pool.health-check-interval=200ms"};
    arguments.insert(arguments.end(), extra_arguments.begin(), extra_arguments.end());
    process = std::make_unique<Exporter>(
        arguments, std::vector<std::pair<std::string, std::string>>{{"DATABASE_URL", url}});
    port = process->port();
  }
  bool healthy(std::chrono::milliseconds limit = 20s) {
    return port != 0 &&
           eventually([&] { return http_exchange(port, get("/health")).status == 200; }, limit);
  }
  std::unique_ptr<Exporter> process;
  int port = 0;
};

// ------------------------------------------------------------ configuration

struct BadConfig {
  std::string name;  ///< the variable or flag the message must name
  std::vector<std::pair<std::string, std::string>> environment;
  std::vector<std::string> arguments;
};

const std::string kFakePassword = "pw-chaos-7f3a9c1e55d2";
const std::string kFakeUrl = "postgresql://poolscope:" + kFakePassword + "@127.0.0.1:1/poolscope";

std::vector<BadConfig> bad_configurations() {
  std::vector<BadConfig> cases;
  auto env = [&](const std::string& variable, const std::string& value, std::string name = "") {
    cases.push_back({name.empty() ? variable : name, {{variable, value}}, {}});
  };
  auto flag = [&](const std::string& option, const std::string& value, std::string name = "") {
    cases.push_back({name.empty() ? option : name, {}, {option + "=" + value}});
  };

  // DATABASE_URL: empty, and strings libpq cannot parse (some carry the password).
  cases.push_back({"DATABASE_URL", {{"DATABASE_URL", ""}}, {}});
  cases.push_back({"DATABASE_URL", {}, {}});  // unset
  for (const std::string& url :
       {std::string("not a url"), std::string("http://example.com/"),
        std::string("postgresql://[::1"),
        "postgresql://poolscope:" + kFakePassword + "@127.0.0.1:5432/db?nonsense=1",
        "host=127.0.0.1 password=" + kFakePassword + " dangling",
        "host='unterminated password=" + kFakePassword, std::string("\x01\x02\xff")}) {
    cases.push_back({"DATABASE_URL", {{"DATABASE_URL", url}}, {}});
  }
  flag("--database.url", "not a url");
  flag("--database.url", "postgresql://poolscope:" + kFakePassword + "@h/db?bogus=1");

  const std::vector<std::pair<std::string, std::string>> sizes = {
      {"POOL_MIN_SIZE", "--pool.min-size"}, {"POOL_MAX_SIZE", "--pool.max-size"}};
  for (const auto& [variable, option] : sizes) {
    for (const std::string value : {"", "-1", "abc", "1.5", "5 apples", "0x10",
                                    "18446744073709551616", "99999999999999999999999"}) {
      env(variable, value);
      flag(option, value.empty() ? "x" : value);
    }
  }
  env("POOL_MAX_SIZE", "0");
  env("POOL_MAX_SIZE", "100000");
  flag("--pool.max-size", "0");
  env("POOL_MIN_SIZE", "20");  // above the default max of 10
  cases.push_back({"POOL_MIN_SIZE", {{"POOL_MIN_SIZE", "8"}, {"POOL_MAX_SIZE", "4"}}, {}});
  cases.push_back({"--pool.min-size", {}, {"--pool.min-size=5", "--pool.max-size=3"}});

  const std::vector<std::pair<std::string, std::string>> durations = {
      {"POOL_ACQUIRE_TIMEOUT", "--pool.acquire-timeout"},
      {"POOL_INIT_TIMEOUT", "--pool.init-timeout"},
      {"POOL_MAX_CONNECTION_LIFETIME", "--pool.max-connection-lifetime"},
      {"POOL_MAX_IDLE_TIME", "--pool.max-idle-time"},
      {"POOL_COMMAND_TIMEOUT", "--pool.command-timeout"},
      {"POOL_LEAK_DETECTION_TIMEOUT", "--pool.leak-detection-timeout"},
      {"POOL_SHUTDOWN_TIMEOUT", "--pool.shutdown-timeout"},
      {"POOL_VALIDATION_IDLE_THRESHOLD", "--pool.validation-idle-threshold"},
      {"POOL_HEALTH_CHECK_INTERVAL", "--pool.health-check-interval"}};
  for (const auto& [variable, option] : durations) {
    for (const std::string value : {"", "-5s", "10parsecs", "5 s", "1e3", "abc", "1h30",
                                    "99999999999h", "1..5s", "s", "\xc2\xb5"}) {
      env(variable, value);
      if (!value.empty()) flag(option, value);
    }
  }
  for (const std::string variable :
       {"POOL_ACQUIRE_TIMEOUT", "POOL_INIT_TIMEOUT", "POOL_MAX_CONNECTION_LIFETIME",
        "POOL_MAX_IDLE_TIME", "POOL_LEAK_DETECTION_TIMEOUT"}) {
    env(variable, "0");
  }
  env("POOL_HEALTH_CHECK_INTERVAL", "1ms");
  flag("--pool.degraded-wait-threshold", "abc");
  flag("--pool.degraded-wait-threshold", "-1s");
  flag("--pool.health-window", "0");
  flag("--pool.health-window", "1.5s");
  flag("--pool.health-window", "abc");
  flag("--pool.reconnect-backoff", "1s,,2s");
  flag("--pool.reconnect-backoff", "-1s");
  flag("--pool.reconnect-backoff", "1s,abc");
  flag("--pool.reconnect-backoff", "0");

  for (const std::string value : {"", "maybe", "2", "-1", "tru"}) {
    env("POOL_ENABLE_LEAK_DETECTION", value);
    if (!value.empty()) flag("--pool.enable-leak-detection", value);
  }
  for (const std::string variable : {"POOL_HEALTHY_HEADROOM", "POOL_DEGRADED_HEADROOM"}) {
    for (const std::string value : {"", "1.5", "-0.1", "abc", "nan", "inf", "0.5x"})
      env(variable, value);
  }
  flag("--pool.healthy-headroom", "2");
  flag("--pool.degraded-headroom", "nan");
  env("POOL_DEGRADED_HEADROOM", "0.9");  // above the healthy default of 0.8
  env("POOL_NAME", "");
  env("POOL_NAME", std::string(200, 'n'));
  for (const std::string value : {"", "verbose", "5", "INFOO"}) {
    env("LOG_LEVEL", value);
    if (!value.empty()) flag("--log.level", value);
  }
  env("LOG_FORMAT", "xml");
  flag("--log.format", "yaml");

  // Flags without a variable.
  for (const std::string value :
       {"", "nonsense", ":99999", ":-1", "1.2.3.4.5:80", "::1:80", "[::1:80", "[1.2.3.4]:80",
        "[::g]:80", "example.com:80", "127.0.0.1"}) {
    flag("--web.listen-address", value);
  }
  for (const std::string value :
       {"", "metrics", "/health", "/mcp", "/a b", "//x", "/x?y", "/%2e"}) {
    flag("--web.telemetry-path", value);
  }
  for (const std::string value : {"1abc", "a-b", "x y", "\xc3\xa9"})
    flag("--metrics.prefix", value);
  flag("--web.config.file", "/nonexistent/web.yml");
  flag("--workload.workers", "-1");
  flag("--workload.workers", "1001");
  flag("--workload.workers", "abc");
  flag("--workload.hold", "abc");
  cases.push_back({"--bogus", {}, {"--bogus"}});
  cases.push_back({"--pool.min-size", {}, {"--pool.min-size"}});  // value missing
  cases.push_back({"--print-rules", {}, {"--print-rules", "--print-dashboard"}});
  return cases;
}

TEST(ExporterBadInput, EveryInvalidSettingExitsTwoWithOneLineNamingIt) {
  const auto cases = bad_configurations();
  std::vector<std::string> failures;
  std::size_t rejected = 0;
  for (const auto& bad : cases) {
    std::vector<std::pair<std::string, std::string>> environment{{"DATABASE_URL", kFakeUrl}};
    for (const auto& [variable, value] : bad.environment) {
      std::erase_if(environment, [&](const auto& entry) { return entry.first == variable; });
      environment.emplace_back(variable, value);
    }
    if (bad.environment.empty() && bad.arguments.empty())
      environment.clear();  // unset DATABASE_URL
    std::vector<std::string> arguments = bad.arguments;
    const bool sets_address = std::any_of(arguments.begin(), arguments.end(), [](const auto& a) {
      return a.starts_with("--web.listen-address");
    });
    if (!sets_address) arguments.push_back("--web.listen-address=127.0.0.1:0");

    std::string described;
    for (const auto& [variable, value] : bad.environment)
      described += variable + "='" + value + "' ";
    for (const auto& argument : bad.arguments) described += argument + " ";

    Exporter exporter(arguments, environment);
    const auto code = exporter.wait(10s);
    const std::string err = exporter.standard_error();
    const std::size_t newlines = std::count(err.begin(), err.end(), '\n');
    std::string problem;
    if (!code) {
      problem = "still running after 10 s (value accepted)";
    } else if (*code != 2) {
      problem = fmt::format("exit code {}", *code);
    } else if (newlines != 1 || err.back() != '\n') {
      problem = fmt::format("{} lines on stderr", newlines);
    } else if (err.find(bad.name) == std::string::npos) {
      problem = "message does not name " + bad.name;
    } else if (err.find(kFakePassword) != std::string::npos) {
      problem = "message shows the password";
    } else if (!exporter.standard_output().empty()) {
      problem = "printed on stdout";
    }
    if (problem.empty()) {
      ++rejected;
    } else {
      failures.push_back(
          fmt::format("{}-> {}; stderr: {}", described, problem, err.substr(0, 300)));
    }
  }
  std::cout << fmt::format(
                   "[bad config] {} invalid settings tried, {} rejected with exit 2 and "
                   "one line naming the setting",
                   cases.size(), rejected)
            << std::endl;
  EXPECT_TRUE(failures.empty()) << failures.size() << " not rejected properly:\n"
                                << fmt::format("{}", fmt::join(failures, "\n"));
}

// libpq parses these, but no connection can ever be made with them: the
// exporter must refuse to start (exit 2 naming DATABASE_URL) instead of
// running forever with a pool that retries in vain.
TEST(ExporterBadInput, DatabaseUrlsLibpqCannotConnectWithAreRejectedAtStart) {
  const std::string base = "postgresql://poolscope:" + kFakePassword + "@127.0.0.1";
  std::vector<std::string> failures;
  const std::vector<std::string> urls = {base + ":notaport/poolscope",
                                         base + ":99999999/poolscope",
                                         base + ":-1/poolscope",
                                         base + ":5432/poolscope?sslmode=bogus",
                                         base + ":5432/poolscope?connect_timeout=soon",
                                         base + ":5432/poolscope?target_session_attrs=bogus"};
  for (const std::string& url : urls) {
    Exporter exporter({"--web.listen-address=127.0.0.1:0"}, {{"DATABASE_URL", url}});
    const auto code = exporter.wait(3s);
    const std::string err = exporter.standard_error();
    const std::string shown = url.substr(base.size());
    if (!code) {
      failures.push_back(shown +
                         " -> accepted: the exporter runs with a pool that can never connect");
    } else if (*code != 2 || err.find("DATABASE_URL") == std::string::npos ||
               std::count(err.begin(), err.end(), '\n') != 1) {
      failures.push_back(
          fmt::format("{} -> exit {}; stderr: {}", shown, *code, err.substr(0, 300)));
    }
    EXPECT_EQ(err.find(kFakePassword), std::string::npos) << err;
  }
  std::cout << fmt::format(
                   "[bad config] {} DATABASE_URLs that libpq parses but cannot use: {} "
                   "not rejected",
                   urls.size(), failures.size())
            << std::endl;
  EXPECT_TRUE(failures.empty()) << fmt::format("{}", fmt::join(failures, "\n"));
}

// ------------------------------------------------------------ HTTP

struct HttpCase {
  std::string name;
  std::string request;
  std::vector<int> accepted;  ///< any 4xx when empty
  bool close_write = false;
};

std::vector<HttpCase> malformed_http() {
  const std::string close = "Connection: close\r\n";
  std::string binary;
  for (int round = 0; round < 4; ++round) {
    for (int byte = 0; byte < 256; ++byte) binary += static_cast<char>(byte);
  }
  std::string many_headers = "GET /health HTTP/1.1\r\nHost: x\r\n" + close;
  for (int i = 0; i < 200; ++i) many_headers += fmt::format("X-Header-{}: value\r\n", i);
  many_headers += "\r\n";
  std::string chunked_flood =
      "POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + close + "\r\n";
  const std::string chunk(64 * 1024, 'x');
  for (int i = 0; i < 40; ++i) chunked_flood += fmt::format("{:x}\r\n{}\r\n", chunk.size(), chunk);
  chunked_flood += "0\r\n\r\n";

  return {
      {"garbage request line", "GARBAGE\r\n\r\n", {}},
      {"binary bytes", binary + "\r\n\r\n", {}},
      {"NUL in the request line",
       std::string("GET /hea") + '\0' + "lth HTTP/1.1\r\nHost: x\r\n\r\n",
       {}},
      {"HTTP/0.9 request", "GET /health\r\n\r\n", {}},
      {"unknown HTTP version", "GET /health HTTP/9.9\r\nHost: x\r\n" + close + "\r\n", {400, 505}},
      {"HTTP/2 preface on HTTP/1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {}},
      {"header without colon", "GET /health HTTP/1.1\r\nNoColonHere\r\n" + close + "\r\n", {}},
      {"100 KB header",
       "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(100000, 'a') + "\r\n" + close +
           "\r\n",
       {}},
      // More than 64 header fields are refused, not silently cut.
      {"200 headers", many_headers, {431}},
      {"100 KB URL",
       "GET /" + std::string(100000, 'a') + " HTTP/1.1\r\nHost: x\r\n" + close + "\r\n",
       {}},
      {"8 KB URL", get("/" + std::string(8000, 'a')), {404}},
      {"10 MB declared body",
       "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n" + close + "\r\n",
       {413}},
      {"2.5 MB chunked body", chunked_flood, {413}},
      {"negative Content-Length",
       "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n" + close + "\r\n",
       {}},
      {"non-numeric Content-Length",
       "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n" + close + "\r\n",
       {}},
      {"body shorter than Content-Length",
       "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" + close + "\r\n{\"a\"",
       {},
       true},
      {"bad chunk size",
       "POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + close +
           "\r\nZZZ\r\n\r\n",
       {}},
      {"DELETE /health", "DELETE /health HTTP/1.1\r\nHost: x\r\n" + close + "\r\n", {405}},
      {"POST /health",
       "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + close + "\r\n",
       {405}},
      {"PUT /metrics",
       "PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + close + "\r\nhi",
       {405}},
      {"PATCH /", "PATCH / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + close + "\r\n", {405}},
      {"GET /mcp", get("/mcp"), {405}},
      {"DELETE /mcp", "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n" + close + "\r\n", {405}},
      // /mcp answers only Host names it serves (DNS rebinding), whatever the method.
      {"DELETE /mcp, foreign Host", "DELETE /mcp HTTP/1.1\r\nHost: x\r\n" + close + "\r\n", {403}},
      {"made-up method", "BREW /health HTTP/1.1\r\nHost: x\r\n" + close + "\r\n", {}},
      {"TRACE", "TRACE /health HTTP/1.1\r\nHost: x\r\n" + close + "\r\n", {}},
      {"CONNECT", "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n" + close + "\r\n", {}},
      {"/../health", get("/../health"), {}},
      {"/health/../metrics", get("/health/../metrics"), {}},
      {"/health/../../../../etc/passwd", get("/health/../../../../etc/passwd"), {}},
      {"/%2e%2e/%2e%2e/etc/passwd", get("/%2e%2e/%2e%2e/etc/passwd"), {}},
      {"/..%2fhealth", get("/..%2fhealth"), {}},
      {"//health", get("//health"), {}},
      {"/health/", get("/health/"), {}},
      {"/HEALTH", get("/HEALTH"), {}},
      {"/%zz", get("/%zz"), {}},
      {"/health%", get("/health%"), {}},
      {"/\\..\\health", get("/\\..\\health"), {}},
  };
}

TEST(ExporterBadInput, MalformedHttpGetsClientErrorsAndTheExporterKeepsServing) {
  AnyCluster cluster;
  ServingExporter exporter(cluster.url());
  ASSERT_TRUE(exporter.healthy()) << exporter.process->standard_error();

  const auto cases = malformed_http();
  std::vector<std::string> failures;
  std::vector<std::string> bodies;
  for (const auto& test : cases) {
    const RawResponse response = http_exchange(exporter.port, test.request, test.close_write);
    bodies.push_back(response.raw);
    const bool ok = test.accepted.empty() ? response.status >= 400 && response.status < 500
                                          : std::find(test.accepted.begin(), test.accepted.end(),
                                                      response.status) != test.accepted.end();
    if (!ok) {
      failures.push_back(fmt::format("{} -> {}", test.name,
                                     response.status == 0 ? std::string("closed without a response")
                                                          : response.head.substr(0, 120)));
    }
    const RawResponse health = http_exchange(exporter.port, get("/health"));
    if (health.status != 200) {
      failures.push_back(fmt::format("after {}: /health answered {}", test.name, health.status));
    }
  }
  // Requests that are not malformed but unusual: anything but a crash, a
  // 5xx or a hang is acceptable; what the server does is printed.
  std::vector<std::string> unusual_notes;
  for (const auto& [name, request] : std::vector<std::pair<std::string, std::string>>{
           {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
           {"absolute-form URL", get("http://127.0.0.1/health")},
           {"LF-only line ends", "GET /health HTTP/1.1\nHost: x\nConnection: close\n\n"}}) {
    const RawResponse response = http_exchange(exporter.port, request);
    unusual_notes.push_back(fmt::format("{}: {}", name,
                                        response.status == 0
                                            ? std::string("closed without a response")
                                            : std::to_string(response.status)));
    if (response.status >= 500) failures.push_back(name + " -> " + std::to_string(response.status));
    if (http_exchange(exporter.port, get("/health")).status != 200) {
      failures.push_back("after " + name + ": /health is not 200");
    }
  }
  std::cout << fmt::format(
                   "[http] {} malformed requests tried, {} answered as expected; unusual "
                   "requests: {}",
                   cases.size(), cases.size() - failures.size(), fmt::join(unusual_notes, "; "))
            << std::endl;
  EXPECT_TRUE(failures.empty()) << fmt::format("{}", fmt::join(failures, "\n"));
  EXPECT_FALSE(exporter.process->wait(0ms).has_value()) << "the exporter exited";
  for (const auto& found : find_secret(cluster.password(), "response", bodies))
    ADD_FAILURE() << found;
}

// A percent-encoded NUL must not cut the path short: "/health%00.json" is
// not /health. (The exporter serves no files, so this is about correctness
// and about not teaching scanners that truncation works.)
TEST(ExporterBadInput, PathsWithAnEncodedNulAreNotServedAsAnotherPath) {
  AnyCluster cluster;
  ServingExporter exporter(cluster.url());
  ASSERT_TRUE(exporter.healthy()) << exporter.process->standard_error();
  std::vector<std::string> failures;
  const std::vector<std::string> paths = {"/health%00", "/health%00.json", "/metrics%00", "/%00",
                                          "/mcp%00"};
  for (const auto& path : paths) {
    const RawResponse response = http_exchange(exporter.port, get(path));
    if (response.status < 400 || response.status >= 500) {
      failures.push_back(
          fmt::format("GET {} -> {} ({})", path, response.status, response.body.substr(0, 60)));
    }
    if (http_exchange(exporter.port, get("/health")).status != 200) {
      failures.push_back("after " + path + ": /health is not 200");
    }
  }
  std::cout << fmt::format("[http] {} paths with %00 tried, {} served as if the path ended there",
                           paths.size(), failures.size())
            << std::endl;
  EXPECT_TRUE(failures.empty()) << fmt::format("{}", fmt::join(failures, "\n"));
}

// ------------------------------------------------------------ JSON-RPC

struct RpcCase {
  std::string name;
  std::string body;
  int code;  ///< expected JSON-RPC error code
};

std::vector<RpcCase> malformed_json_rpc() {
  const std::string deep = std::string(5000, '[') + std::string(5000, ']');
  return {
      {"empty body", "", -32700},
      {"truncated JSON", "{\"jsonrpc\":\"2.0\",\"id\":1,", -32700},
      {"not JSON", "hello", -32700},
      {"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}", -32700},
      {"NUL byte", std::string("{\"jsonrpc\":\"2.0\",") + '\0' + "\"id\":1}", -32700},
      {"null", "null", -32600},
      {"number", "42", -32600},
      {"string", "\"ping\"", -32600},
      {"empty batch", "[]", -32600},
      {"batch", "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", -32600},
      {"nested 5000 deep", deep, -32600},
      {"no jsonrpc member", "{\"id\":1,\"method\":\"ping\"}", -32600},
      {"jsonrpc 1.0", "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", -32600},
      {"jsonrpc as number", "{\"jsonrpc\":2.0,\"id\":1,\"method\":\"ping\"}", -32600},
      {"method missing", "{\"jsonrpc\":\"2.0\",\"id\":1}", -32600},
      {"method not a string", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":42}", -32600},
      {"id an object", "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"ping\"}", -32600},
      {"id null", "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", -32600},
      {"id a float", "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", -32600},
      {"id an array", "{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"ping\"}", -32600},
      {"params a string", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":\"x\"}",
       -32600},
      {"unknown method", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\"}", -32601},
      {"method with a NUL", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\\u0000\"}", -32601},
      {"params an array",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":[1]}", -32602},
      {"read without uri",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{}}", -32602},
      {"read uri a number",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":42}}",
       -32602},
      {"read unknown uri",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":\"file:///"
       "etc/passwd\"}}",
       -32002},
      {"read path-trick uri",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":\"health://"
       "connection-pool/../x\"}}",
       -32002},
      {"list with a cursor",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/list\",\"params\":{\"cursor\":\"x\"}}",
       -32602},
      {"initialize without version",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}", -32602},
      {"initialize version a number",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":5}"
       "}",
       -32602},
      {"initialize capabilities a string",
       "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"
       "\"2025-06-18\",\"capabilities\":\"all\"}}",
       -32602},
  };
}

TEST(ExporterBadInput, MalformedJsonRpcGetsJsonRpcErrorsAndTheExporterKeepsServing) {
  AnyCluster cluster;
  ServingExporter exporter(cluster.url());
  ASSERT_TRUE(exporter.healthy()) << exporter.process->standard_error();

  const auto cases = malformed_json_rpc();
  std::vector<std::string> failures;
  std::vector<std::string> bodies;
  for (const auto& test : cases) {
    const RawResponse response = http_exchange(exporter.port, post_mcp(test.body));
    bodies.push_back(response.raw);
    const json message = json::parse(response.body, nullptr, false);
    const bool ok = response.status == 200 && message.is_object() &&
                    message.value("jsonrpc", "") == "2.0" && message.contains("error") &&
                    message["error"].value("code", 0) == test.code &&
                    message["error"].contains("message") && message.contains("id");
    if (!ok) {
      failures.push_back(fmt::format("{} -> HTTP {} {}", test.name, response.status,
                                     response.body.substr(0, 200)));
    }
    if (http_exchange(exporter.port, get("/health")).status != 200) {
      failures.push_back("after " + test.name + ": /health is not 200");
    }
  }
  // HTTP-level refusals on /mcp.
  struct HttpLevel {
    std::string name;
    std::string request;
    int status;
  };
  const std::string ping = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
  const std::vector<HttpLevel> http_level = {
      {"Accept text/html only",
       "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nContent-Length: " +
           std::to_string(ping.size()) + "\r\nConnection: close\r\n\r\n" + ping,
       406},
      {"foreign Origin", post_mcp(ping, "Origin: http://evil.example\r\n"), 403},
      {"Origin null", post_mcp(ping, "Origin: null\r\n"), 403},
      {"unknown MCP-Protocol-Version", post_mcp(ping, "MCP-Protocol-Version: 1999-01-01\r\n"), 400},
      {"1.1 MB body",
       post_mcp("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"pad\":\"" +
                std::string(1100 * 1024, 'x') + "\"}}"),
       413},
  };
  for (const auto& test : http_level) {
    const RawResponse response = http_exchange(exporter.port, test.request);
    bodies.push_back(response.raw);
    if (response.status != test.status) {
      failures.push_back(
          fmt::format("{} -> HTTP {} (expected {})", test.name, response.status, test.status));
    }
  }
  // A large but allowed message (the /mcp body limit is 64 KiB) still works,
  // and so does a normal session.
  const RawResponse big = http_exchange(
      exporter.port,
      post_mcp("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\",\"params\":{\"pad\":\"" +
               std::string(60 * 1024, 'x') + "\"}}"));
  EXPECT_EQ(big.status, 200);
  EXPECT_EQ(json::parse(big.body, nullptr, false).value("id", 0), 7) << big.body.substr(0, 200);
  const RawResponse read = http_exchange(
      exporter.port, post_mcp("{\"jsonrpc\":\"2.0\",\"id\":\"r\",\"method\":\"resources/read\","
                              "\"params\":{\"uri\":\"health://connection-pool\"}}"));
  EXPECT_EQ(read.status, 200);
  EXPECT_TRUE(json::parse(read.body, nullptr, false).contains("result")) << read.body;

  std::cout << fmt::format(
                   "[mcp] {} malformed JSON-RPC messages and {} refused HTTP requests "
                   "tried, {} not answered as expected",
                   cases.size(), http_level.size(), failures.size())
            << std::endl;
  EXPECT_TRUE(failures.empty()) << fmt::format("{}", fmt::join(failures, "\n"));
  EXPECT_FALSE(exporter.process->wait(0ms).has_value()) << "the exporter exited";
  for (const auto& found : find_secret(cluster.password(), "response", bodies))
    ADD_FAILURE() << found;
}

// ------------------------------------------------------------ secrets

std::string mcp_read(int port, const std::string& uri) {
  return http_exchange(port, post_mcp("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\","
                                      "\"params\":{\"uri\":\"" +
                                      uri + "\"}}"))
      .raw;
}

std::vector<std::string> everything_served(int port) {
  return {
      http_exchange(port, get("/health")).raw,
      http_exchange(port, get("/metrics")).raw,
      http_exchange(port, get("/")).raw,
      mcp_read(port, "health://connection-pool"),
      mcp_read(port, "stats://connection-pool"),
      http_exchange(port, post_mcp("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\","
                                   "\"params\":{\"protocolVersion\":\"2025-06-18\"}}"))
          .raw,
      http_exchange(port, post_mcp("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/list\"}"))
          .raw};
}

// Through start, an outage (the last error is a libpq message), recovery, a
// rejected login and shutdown: the password is nowhere.
TEST(ExporterBadInput, PasswordAppearsInNoLogMetricHealthOrMcpResponse) {
  TempCluster cluster;
  std::vector<std::string> seen;
  std::size_t responses = 0;
  {
    ServingExporter exporter(cluster.url());
    ASSERT_TRUE(exporter.healthy()) << exporter.process->standard_error();
    auto collect = [&] {
      for (auto& text : everything_served(exporter.port)) {
        seen.push_back(std::move(text));
        ++responses;
      }
    };
    collect();
    cluster.stop_immediate();
    ASSERT_TRUE(eventually(
        [&] {
          const RawResponse health = http_exchange(exporter.port, get("/health"));
          const json document = json::parse(health.body, nullptr, false);
          return health.status == 503 && document.is_object() &&
                 document["database"]["last_error"].is_string();
        },
        30s))
        << "the outage never showed on /health";
    collect();
    cluster.start();
    ASSERT_TRUE(exporter.healthy(30s));
    collect();
    exporter.process->signal(SIGTERM);
    EXPECT_EQ(exporter.process->wait(30s), std::optional<int>(0));
    seen.push_back(exporter.process->standard_error());
  }
  {
    // A wrong password: the server's rejection must not echo either one.
    std::string wrong = cluster.url();
    const std::string wrong_password = "pw-wrong-0d1e2f3a4b5c";
    wrong.replace(wrong.find(cluster.password()), cluster.password().size(), wrong_password);
    ServingExporter exporter(wrong);
    ASSERT_NE(exporter.port, 0) << exporter.process->standard_error();
    ASSERT_TRUE(eventually(
        [&] {
          const json document =
              json::parse(http_exchange(exporter.port, get("/health")).body, nullptr, false);
          return document.is_object() && document["database"]["last_error"].is_string();
        },
        30s));
    for (auto& text : everything_served(exporter.port)) {
      EXPECT_EQ(text.find(wrong_password), std::string::npos) << text.substr(0, 400);
      seen.push_back(std::move(text));
      ++responses;
    }
    exporter.process->signal(SIGTERM);
    exporter.process->wait(30s);
    const std::string err = exporter.process->standard_error();
    EXPECT_EQ(err.find(wrong_password), std::string::npos);
    EXPECT_NE(err.find("password authentication failed"), std::string::npos)
        << "the reason should still be reported";
    seen.push_back(err);
  }
  const auto leaks = find_secret(cluster.password(), "exporter output", seen);
  std::size_t log_lines = 0;
  for (const auto& text : seen) {
    if (text.starts_with("{\"component\"")) log_lines += std::count(text.begin(), text.end(), '\n');
  }
  std::cout << fmt::format(
                   "[secrets] {} HTTP/MCP responses and {} exporter log lines checked "
                   "through start, outage, recovery, a rejected login and shutdown: "
                   "password {}",
                   responses, log_lines, leaks.empty() ? "not found" : "FOUND")
            << std::endl;
  EXPECT_TRUE(leaks.empty()) << fmt::format("{}", fmt::join(leaks, "\n"));
}

}  // namespace
}  // namespace poolscope::chaos
