#include "endpoints.h"

#include <crypt.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <zlib.h>

#include <array>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace poolscope::exporter {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

std::string header_value(const HttpResponse& response, const std::string& name) {
  for (const auto& [key, value] : response.headers) {
    if (key == name) return value;
  }
  return "";
}

std::string gunzip(const std::string& data) {
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 16) != Z_OK) throw std::runtime_error("inflateInit2");
  std::string out(1 << 20, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  const int result = inflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  inflateEnd(&stream);
  if (result != Z_STREAM_END) throw std::runtime_error("not a complete gzip stream");
  return out;
}

HttpRequest get(std::string path) {
  HttpRequest request;
  request.method = "GET";
  request.path = std::move(path);
  return request;
}

class EndpointsTest : public ::testing::Test {
 protected:
  EndpointsTest() {
    stats_.pool_name = "default";
    stats_.state = PoolState::kHealthy;
    stats_.health = HealthStatus::kHealthy;
    stats_.total_connections = 2;
    stats_.idle_connections = 2;
    stats_.min_size = 2;
    stats_.max_size = 10;
    auto& family = prometheus::BuildCounter()
                       .Name("test_requests_total")
                       .Help("Requests seen by the test")
                       .Register(*registry_);
    family.Add({{"pool", "default"}}).Increment(3);
  }

  Endpoints make(Endpoints::Options options = {},
                 std::unique_ptr<BasicAuthenticator> auth = nullptr,
                 std::unique_ptr<RateLimiter> limiter = nullptr) {
    if (options.version.empty()) options.version = "1.2.3";
    Endpoints::Sources sources;
    sources.statistics = [this] {
      if (fail_statistics_) throw std::runtime_error("statistics unavailable");
      return stats_;
    };
    sources.metrics = [this] { return registry_->Collect(); };
    sources.actions.resize = [this](std::optional<std::size_t>, std::optional<std::size_t>) {
      ++actions_run_;
      return nlohmann::json::object();
    };
    sources.actions.drain = [this] {
      ++actions_run_;
      return nlohmann::json::object();
    };
    return Endpoints(std::move(options), std::move(sources), std::move(auth), std::move(limiter));
  }

  PoolStatistics stats_;
  bool fail_statistics_ = false;
  int actions_run_ = 0;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
};

TEST_F(EndpointsTest, HealthIs200WithTheDocumentWhenThePoolServes) {
  const HttpResponse response = make().handle(get("/health"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "application/json");
  const auto document = nlohmann::json::parse(response.body);
  EXPECT_EQ(document["status"], "healthy");
  EXPECT_EQ(document["database"]["pool"]["total"], 2);
  EXPECT_EQ(header_value(response, "Cache-Control"), "no-store");
}

TEST_F(EndpointsTest, HealthStays200WhenOnlyLoadMakesThePoolUnhealthy) {
  stats_.health = HealthStatus::kUnhealthy;
  stats_.state = PoolState::kUnhealthy;
  stats_.idle_connections = 0;
  stats_.active_connections = stats_.total_connections = 10;
  stats_.waiting_requests = 25;
  const HttpResponse response = make().handle(get("/health"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(nlohmann::json::parse(response.body)["status"], "unhealthy");
}

TEST_F(EndpointsTest, HealthIs503WhenThePoolCannotServe) {
  for (const PoolState state : {PoolState::kInitializing, PoolState::kRecovering,
                                PoolState::kShuttingDown, PoolState::kTerminated}) {
    stats_.state = state;
    EXPECT_EQ(make().handle(get("/health")).status, 503) << to_string(state);
  }
  stats_.state = PoolState::kUnhealthy;
  stats_.total_connections = stats_.idle_connections = 0;
  EXPECT_EQ(make().handle(get("/health")).status, 503);
}

TEST_F(EndpointsTest, HealthIs503OnceShutdownBegins) {
  Endpoints endpoints = make();
  EXPECT_EQ(endpoints.handle(get("/health")).status, 200);
  endpoints.begin_shutdown();
  const HttpResponse response = endpoints.handle(get("/health"));
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(nlohmann::json::parse(response.body)["status"], "draining");
}

TEST(EndpointsScrapes, ScrapesArrivingDuringACollectionShareTheNextOne) {
  std::mutex mutex;
  std::condition_variable changed;
  int collections = 0;
  bool release_first = false;
  Endpoints::Sources sources;
  sources.statistics = [] { return PoolStatistics{}; };
  sources.metrics = [&] {
    std::unique_lock lock(mutex);
    const int number = ++collections;
    changed.notify_all();
    if (number == 1) changed.wait(lock, [&] { return release_first; });
    prometheus::ClientMetric metric;
    metric.gauge.value = number;
    prometheus::MetricFamily family{
        "collection", "which collection", prometheus::MetricType::Gauge, {metric}};
    return std::vector<prometheus::MetricFamily>{family};
  };
  const Endpoints endpoints({}, std::move(sources), nullptr, nullptr);

  std::string first;
  std::thread first_scrape([&] { first = endpoints.handle(get("/metrics")).body; });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return collections == 1; });
  }
  // Three scrapes arrive while the first collection runs: none may take its
  // (older) page, and they share one collection.
  std::array<std::string, 3> later;
  std::vector<std::thread> later_scrapes;
  for (std::string& page : later) {
    later_scrapes.emplace_back([&] { page = endpoints.handle(get("/metrics")).body; });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let them queue up
  {
    std::lock_guard lock(mutex);
    release_first = true;
  }
  changed.notify_all();
  first_scrape.join();
  for (std::thread& scrape : later_scrapes) scrape.join();

  EXPECT_THAT(first, HasSubstr("collection 1"));
  for (const std::string& page : later) EXPECT_THAT(page, HasSubstr("collection 2"));
  EXPECT_EQ(collections, 2);
}

TEST_F(EndpointsTest, MetricsUseTheTextFormat) {
  const HttpResponse response = make().handle(get("/metrics"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(response.body, HasSubstr("# TYPE test_requests_total counter"));
  EXPECT_THAT(response.body, HasSubstr("test_requests_total{pool=\"default\"} 3"));
  EXPECT_EQ(header_value(response, "Content-Encoding"), "");
}

TEST_F(EndpointsTest, MetricsAreGzippedWhenTheClientAsks) {
  HttpRequest request = get("/metrics");
  request.accept_encoding = "deflate, gzip;q=0.9";
  const HttpResponse response = make().handle(request);
  EXPECT_EQ(header_value(response, "Content-Encoding"), "gzip");
  EXPECT_EQ(header_value(response, "Vary"), "Accept-Encoding");
  EXPECT_EQ(gunzip(response.body), make().handle(get("/metrics")).body);
  request.accept_encoding = "gzip;q=0";
  EXPECT_EQ(header_value(make().handle(request), "Content-Encoding"), "");
}

TEST_F(EndpointsTest, TelemetryPathIsConfigurable) {
  Endpoints::Options options;
  options.telemetry_path = "/prom";
  Endpoints endpoints = make(options);
  EXPECT_EQ(endpoints.handle(get("/prom")).status, 200);
  EXPECT_EQ(endpoints.handle(get("/metrics")).status, 404);
}

TEST_F(EndpointsTest, UnknownPathsAre404) {
  Endpoints endpoints = make();
  for (const char* path : {"/nope", "/metrics/", "/x/../metrics", "//metrics", "/HEALTH", ""}) {
    EXPECT_EQ(endpoints.handle(get(path)).status, 404) << path;
  }
}

TEST_F(EndpointsTest, WrongMethodsAre405WithAllow) {
  Endpoints endpoints = make();
  for (const char* path : {"/metrics", "/health", "/"}) {
    for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "TRACE"}) {
      HttpRequest request = get(path);
      request.method = method;
      const HttpResponse response = endpoints.handle(request);
      EXPECT_EQ(response.status, 405) << method << " " << path;
      EXPECT_EQ(header_value(response, "Allow"), "GET, HEAD, OPTIONS");
    }
  }
  HttpRequest request = get("/mcp");
  EXPECT_EQ(endpoints.handle(request).status, 405);  // MCP is POST only
}

TEST_F(EndpointsTest, OptionsListsTheMethods) {
  HttpRequest request = get("/health");
  request.method = "OPTIONS";
  const HttpResponse response = make().handle(request);
  EXPECT_EQ(response.status, 204);
  EXPECT_EQ(header_value(response, "Allow"), "GET, HEAD, OPTIONS");
}

TEST_F(EndpointsTest, HeadIsAnsweredLikeGet) {
  HttpRequest request = get("/health");
  request.method = "HEAD";
  EXPECT_EQ(make().handle(request).status, 200);
}

TEST_F(EndpointsTest, LandingPageEscapesEverything) {
  stats_.pool_name = "<script>alert('x')</script>";
  stats_.last_error = "a \"quoted\" & <b>bold</b> error";
  const HttpResponse response = make().handle(get("/"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "text/html; charset=utf-8");
  EXPECT_THAT(response.body, Not(HasSubstr("<script>alert")));
  EXPECT_THAT(response.body, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
  EXPECT_THAT(response.body, HasSubstr("&quot;quoted&quot; &amp; &lt;b&gt;"));
  EXPECT_THAT(response.body, HasSubstr("href=\"/metrics\""));
  EXPECT_THAT(response.body, HasSubstr("href=\"/health\""));
}

TEST_F(EndpointsTest, McpReadsTheHealthResource) {
  HttpRequest request = get("/mcp");
  request.method = "POST";
  request.accept = "application/json, text/event-stream";
  request.body =
      R"({"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"health://connection-pool"}})";
  const HttpResponse response = make().handle(request);
  ASSERT_EQ(response.status, 200);
  const auto message = nlohmann::json::parse(response.body);
  EXPECT_EQ(message["id"], 7);
  const auto document =
      nlohmann::json::parse(message["result"]["contents"][0]["text"].get<std::string>());
  EXPECT_EQ(document["database"]["pool"]["total"], 2);
}

TEST_F(EndpointsTest, McpRefusesForeignOriginsAndUnknownProtocolVersions) {
  HttpRequest request = get("/mcp");
  request.method = "POST";
  request.accept = "application/json, text/event-stream";
  request.body = R"({"jsonrpc":"2.0","id":1,"method":"ping"})";
  request.host = "exporter.internal:9839";
  Endpoints::Options options;
  options.allowed_hosts = {"exporter.internal"};
  Endpoints endpoints = make(options);
  request.origin = "https://evil.example";
  EXPECT_EQ(endpoints.handle(request).status, 403);
  request.origin = "http://exporter.internal:9839";
  EXPECT_EQ(endpoints.handle(request).status, 200);
  request.origin = "";
  request.mcp_protocol_version = "1999-01-01";
  EXPECT_EQ(endpoints.handle(request).status, 400);
}

TEST(Origin, AllowsAbsentSameHostAndLoopbackOrigins) {
  EXPECT_TRUE(is_allowed_origin("", "x:1"));
  EXPECT_TRUE(is_allowed_origin("http://localhost:3000", "x:1"));
  EXPECT_TRUE(is_allowed_origin("http://127.0.0.1", "x:1"));
  EXPECT_TRUE(is_allowed_origin("http://[::1]:8080", "x:1"));
  EXPECT_TRUE(is_allowed_origin("https://X:1", "x:1"));
  EXPECT_FALSE(is_allowed_origin("null", "x:1"));
  EXPECT_FALSE(is_allowed_origin("http://x:2", "x:1"));
  EXPECT_FALSE(is_allowed_origin("http://localhost.evil.example", "x:1"));
  EXPECT_FALSE(is_allowed_origin("file://", "x:1"));
}

std::string bcrypt(const std::string& password) {
  std::array<char, CRYPT_GENSALT_OUTPUT_SIZE> setting{};
  crypt_gensalt_rn("$2b$", 4, nullptr, 0, setting.data(), static_cast<int>(setting.size()));
  auto data = std::make_unique<crypt_data>();
  return crypt_r(password.c_str(), setting.data(), data.get());
}

TEST_F(EndpointsTest, EveryEndpointNeedsCredentialsWhenUsersAreConfigured) {
  Endpoints endpoints =
      make({}, std::make_unique<BasicAuthenticator>(
                   std::map<std::string, std::string>{{"prometheus", bcrypt("scrape")}}));
  for (const char* path : {"/metrics", "/health", "/", "/mcp", "/nope"}) {
    const HttpResponse response = endpoints.handle(get(path));
    EXPECT_EQ(response.status, 401) << path;
    EXPECT_EQ(header_value(response, "WWW-Authenticate"), "Basic realm=\"poolscope\"");
  }
  HttpRequest request = get("/metrics");
  request.authorization = "Basic cHJvbWV0aGV1czpzY3JhcGU=";  // prometheus:scrape
  EXPECT_EQ(endpoints.handle(request).status, 200);
  request.authorization = "Basic cHJvbWV0aGV1czpzY3JhcEU=";  // prometheus:scrapE
  EXPECT_EQ(endpoints.handle(request).status, 401);
}

HttpRequest mcp_call(std::string_view method, nlohmann::json params) {
  HttpRequest request;
  request.method = "POST";
  request.path = "/mcp";
  request.accept = "application/json, text/event-stream";
  nlohmann::json message = {{"jsonrpc", "2.0"}, {"id", 1}, {"method", method}};
  if (!params.is_null()) message["params"] = std::move(params);
  request.body = message.dump();
  return request;
}

TEST_F(EndpointsTest, McpToolsExistOnlyWithBasicAuth) {
  const nlohmann::json drain = {{"name", "pool_drain"}, {"arguments", nlohmann::json::object()}};
  {
    Endpoints open = make();
    const auto answer = nlohmann::json::parse(open.handle(mcp_call("tools/list", {})).body);
    EXPECT_EQ(answer["error"]["code"], -32601) << answer;  // no such method without auth
    const auto call = nlohmann::json::parse(open.handle(mcp_call("tools/call", drain)).body);
    EXPECT_EQ(call["error"]["code"], -32601) << call;
    EXPECT_EQ(actions_run_, 0);
  }
  Endpoints guarded =
      make({}, std::make_unique<BasicAuthenticator>(
                   std::map<std::string, std::string>{{"operator", bcrypt("rotate")}}));
  HttpRequest list = mcp_call("tools/list", {});
  EXPECT_EQ(guarded.handle(list).status, 401);        // the tools need the credentials too
  list.authorization = "Basic b3BlcmF0b3I6cm90YXRl";  // operator:rotate
  const auto tools = nlohmann::json::parse(guarded.handle(list).body)["result"]["tools"];
  ASSERT_EQ(tools.size(), 2u);
  EXPECT_EQ(tools[0]["name"], "pool_resize");
  EXPECT_EQ(tools[1]["name"], "pool_drain");
  HttpRequest call = mcp_call("tools/call", drain);
  call.authorization = list.authorization;
  const auto result = nlohmann::json::parse(guarded.handle(call).body)["result"];
  EXPECT_EQ(result["isError"], false) << result;
  EXPECT_EQ(actions_run_, 1);
}

TEST_F(EndpointsTest, RateLimitAnswers429) {
  Endpoints endpoints = make({}, nullptr, std::make_unique<RateLimiter>(std::chrono::hours(1), 2));
  EXPECT_EQ(endpoints.handle(get("/health")).status, 200);
  EXPECT_EQ(endpoints.handle(get("/health")).status, 200);
  EXPECT_EQ(endpoints.handle(get("/health")).status, 429);
}

TEST_F(EndpointsTest, ConfiguredHeadersGoOnEveryResponse) {
  Endpoints::Options options;
  options.response_headers = {{"X-Frame-Options", "deny"}};
  Endpoints endpoints = make(options);
  EXPECT_THAT(endpoints.handle(get("/health")).headers, Contains(Pair("X-Frame-Options", "deny")));
  EXPECT_THAT(endpoints.handle(get("/nope")).headers, Contains(Pair("X-Frame-Options", "deny")));
}

TEST_F(EndpointsTest, AFailingSourceGives500) {
  fail_statistics_ = true;
  EXPECT_EQ(make().handle(get("/health")).status, 500);
  EXPECT_EQ(make().handle(get("/")).status, 500);
}

HttpRequest mcp_post(std::string body, std::string host = "127.0.0.1:9839") {
  HttpRequest request = get("/mcp");
  request.method = "POST";
  request.accept = "application/json";
  request.host = std::move(host);
  request.body = std::move(body);
  return request;
}

constexpr const char* kPing = R"({"jsonrpc":"2.0","id":1,"method":"ping"})";

TEST_F(EndpointsTest, McpRefusesADnsRebindingRequest) {
  Endpoints endpoints = make();
  HttpRequest request = mcp_post(kPing, "evil.example:9839");
  request.origin = "http://evil.example:9839";  // same as Host: passes the Origin check
  const HttpResponse response = endpoints.handle(request);
  EXPECT_EQ(response.status, 403);
  EXPECT_THAT(response.body, HasSubstr("Host"));
}

TEST_F(EndpointsTest, McpServesAllowedHosts) {
  Endpoints::Options options;
  options.allowed_hosts = {"exporter.internal"};
  Endpoints endpoints = make(options);
  EXPECT_EQ(endpoints.handle(mcp_post(kPing, "exporter.internal:9839")).status, 200);
  EXPECT_EQ(endpoints.handle(mcp_post(kPing, "other.internal:9839")).status, 403);
}

TEST(Host, AllowsAddressesLocalhostAndConfiguredNamesOnly) {
  const std::vector<std::string> allowed = {"exporter.example", ".svc.example"};
  for (const char* host :
       {"", "127.0.0.1:9839", "10.0.0.7", "[::1]:9839", "[fe80::1]", "localhost:1", "LOCALHOST",
        "localhost.", "exporter.example:9839", "Exporter.Example", "pod.ns.svc.example:80"}) {
    EXPECT_TRUE(is_allowed_host(host, allowed)) << host;
  }
  for (const char* host :
       {"evil.example:9839", "127.0.0.1.nip.io", "localhost.evil.example", "exporter.example.evil",
        "svc.example", "xsvc.example", ":9839", "1.2.3.4.5", "[::1"}) {
    EXPECT_FALSE(is_allowed_host(host, allowed)) << host;
  }
}

TEST_F(EndpointsTest, McpRefusesBodiesOverTheLimitWith413) {
  Endpoints::Options options;
  options.mcp_max_body_bytes = 1024;
  Endpoints endpoints = make(options);
  std::string body = R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":")";
  body += std::string(1024 - body.size() - 3, 'x') + "\"}}";
  ASSERT_EQ(body.size(), 1024u);
  EXPECT_EQ(endpoints.handle(mcp_post(body)).status, 200);
  body.insert(body.size() - 3, "x");
  EXPECT_EQ(endpoints.handle(mcp_post(body)).status, 413);
}

TEST_F(EndpointsTest, McpAnswers503WhenTheConcurrencyLimitIsReached) {
  Endpoints::Options options;
  options.mcp_max_concurrent = 1;
  std::mutex mutex;
  std::condition_variable changed;
  bool inside = false;
  bool release = false;
  Endpoints::Sources sources;
  sources.statistics = [&] {
    std::unique_lock lock(mutex);
    inside = true;
    changed.notify_all();
    changed.wait(lock, [&] { return release; });
    return stats_;
  };
  sources.metrics = [this] { return registry_->Collect(); };
  options.version = "1";
  Endpoints endpoints(options, std::move(sources), nullptr, nullptr);

  std::thread reader([&] {
    const HttpResponse response = endpoints.handle(mcp_post(
        R"({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"health://connection-pool"}})"));
    EXPECT_EQ(response.status, 200);
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return inside; });
  }
  const HttpResponse busy = endpoints.handle(mcp_post(kPing));
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(header_value(busy, "Retry-After"), "1");
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  reader.join();
  EXPECT_EQ(endpoints.handle(mcp_post(kPing)).status, 200);  // the slot was given back
}

TEST_F(EndpointsTest, HealthCanBeServedWithoutCredentialsWhileEverythingElseNeedsThem) {
  Endpoints::Options options;
  options.public_health = true;
  Endpoints endpoints =
      make(options, std::make_unique<BasicAuthenticator>(
                        std::map<std::string, std::string>{{"prometheus", bcrypt("scrape")}}));
  EXPECT_EQ(endpoints.handle(get("/health")).status, 200);
  for (const char* path : {"/metrics", "/", "/mcp", "/nope"}) {
    EXPECT_EQ(endpoints.handle(get(path)).status, 401) << path;
  }
}

TEST_F(EndpointsTest, WrongPasswordsUseTheirClientsBudgetNotTheVerifiedClients) {
  Endpoints endpoints =
      make({},
           std::make_unique<BasicAuthenticator>(
               std::map<std::string, std::string>{{"prometheus", bcrypt("scrape")}}),
           std::make_unique<RateLimiter>(std::chrono::hours(1), 3));
  HttpRequest scraper = get("/metrics");
  scraper.remote_address = "10.0.0.1";
  scraper.authorization = "Basic cHJvbWV0aGV1czpzY3JhcGU=";  // prometheus:scrape
  EXPECT_EQ(endpoints.handle(scraper).status, 200);          // verified with bcrypt, now cached

  HttpRequest attacker = get("/metrics");
  attacker.remote_address = "10.0.0.66";
  attacker.authorization = "Basic cHJvbWV0aGV1czpzY3JhcEU=";  // prometheus:scrapE
  for (int i = 0; i < 3; ++i) EXPECT_EQ(endpoints.handle(attacker).status, 401);
  EXPECT_EQ(endpoints.handle(attacker).status, 429);
  attacker.authorization.clear();
  EXPECT_EQ(endpoints.handle(attacker).status, 429);

  // The cached scraper has its own three tokens, untouched by the attacker.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(endpoints.handle(scraper).status, 200);
  EXPECT_EQ(endpoints.handle(scraper).status, 429);
}

}  // namespace
}  // namespace poolscope::exporter
