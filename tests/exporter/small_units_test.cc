// Tests of the exporter's small pure helpers: gzip negotiation, the rate
// limiter, password redaction, HTML escaping and the landing page.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "client_rate_limiter.h"
#include "gzip.h"
#include "landing_page.h"
#include "rate_limiter.h"
#include "redaction.h"

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;

TEST(AcceptsGzip, FollowsAcceptEncoding) {
  EXPECT_TRUE(accepts_gzip("gzip"));
  EXPECT_TRUE(accepts_gzip("deflate, gzip"));
  EXPECT_TRUE(accepts_gzip("GZIP;q=0.5"));
  EXPECT_TRUE(accepts_gzip("x-gzip"));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("identity"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("*, gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip;q=abc"));
  EXPECT_FALSE(accepts_gzip("gzipx"));
}

TEST(GzipCompress, ProducesAGzipStream) {
  const std::string compressed = gzip_compress(std::string(10000, 'a'));
  ASSERT_GE(compressed.size(), 10u);
  EXPECT_EQ(static_cast<unsigned char>(compressed[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(compressed[1]), 0x8b);
  EXPECT_LT(compressed.size(), 200u);
  EXPECT_NO_THROW(gzip_compress(""));
}

TEST(RateLimiter, AllowsABurstThenOneRequestPerInterval) {
  RateLimiter limiter(100ms, 2);
  const auto start = RateLimiter::Clock::time_point(1s);
  EXPECT_TRUE(limiter.allow(start));
  EXPECT_TRUE(limiter.allow(start));
  EXPECT_FALSE(limiter.allow(start));
  EXPECT_FALSE(limiter.allow(start + 50ms));
  EXPECT_TRUE(limiter.allow(start + 100ms));
  EXPECT_FALSE(limiter.allow(start + 100ms));
  // Tokens saved up never exceed the burst.
  EXPECT_TRUE(limiter.allow(start + 10s));
  EXPECT_TRUE(limiter.allow(start + 10s));
  EXPECT_FALSE(limiter.allow(start + 10s));
}

TEST(RateLimiter, ZeroIntervalDisablesIt) {
  RateLimiter limiter(0ms, 0);
  EXPECT_FALSE(limiter.enabled());
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter.allow());
}

TEST(RateLimiter, ZeroBurstRefusesEverything) {
  RateLimiter limiter(1ms, 0);
  EXPECT_FALSE(limiter.allow(RateLimiter::Clock::time_point(1s)));
  EXPECT_FALSE(limiter.allow(RateLimiter::Clock::time_point(2s)));
}

std::string masked(std::string text) {
  mask_connection_secrets(std::span<char>(text.data(), text.size()));
  return text;
}

TEST(MaskConnectionSecrets, HidesSecretsAsTypedAndKeepsTheRest) {
  EXPECT_EQ(masked("postgresql://u:pw@h:5432/db"), "postgresql://u:**@h:5432/db");
  // Percent-encoded: the encoded text is what ps shows.
  EXPECT_EQ(masked("postgresql://u:%70%77@h/db"), "postgresql://u:******@h/db");
  EXPECT_EQ(masked("postgres://u:a?b@h/db"), "postgres://u:***@h/db");
  EXPECT_EQ(masked("postgresql://u@h/db?sslmode=require&password=pw&sslpassword=k"),
            "postgresql://u@h/db?sslmode=require&password=**&sslpassword=*");
  EXPECT_EQ(masked("postgresql://h/db"), "postgresql://h/db");
  EXPECT_EQ(masked("host=h password=pw user=u"), "host=h password=** user=u");
  EXPECT_EQ(masked("host=h password = 'p w\\' x' sslpassword=k"),
            "host=h password = ********* sslpassword=*");
  EXPECT_EQ(masked("host=h"), "host=h");
  EXPECT_EQ(masked("password"), "password");
  EXPECT_EQ(masked("=x password="), "=x password=");
}

TEST(ClientRateLimiter, GivesEveryClientItsOwnBucket) {
  ClientRateLimiter limiter(100ms, 2);
  const auto start = ClientRateLimiter::Clock::time_point(1s);
  EXPECT_TRUE(limiter.allow("a", start));
  EXPECT_TRUE(limiter.allow("a", start));
  EXPECT_FALSE(limiter.allow("a", start));
  EXPECT_TRUE(limiter.allow("b", start));  // a's flood costs b nothing
  EXPECT_TRUE(limiter.allow("a", start + 100ms));
  EXPECT_FALSE(limiter.allow("a", start + 100ms));
}

TEST(ClientRateLimiter, KeepsAtMostMaxClientsBuckets) {
  ClientRateLimiter limiter(1s, 1, 3);
  const auto start = ClientRateLimiter::Clock::time_point(1s);
  for (const char* client : {"a", "b", "c"}) EXPECT_TRUE(limiter.allow(client, start));
  EXPECT_EQ(limiter.clients(), 3u);
  // A fourth client while all three are still empty: the table is cleared.
  EXPECT_TRUE(limiter.allow("d", start));
  EXPECT_EQ(limiter.clients(), 1u);
  for (const char* client : {"e", "f"}) EXPECT_TRUE(limiter.allow(client, start));
  // Later, the refilled buckets are the ones dropped.
  EXPECT_TRUE(limiter.allow("g", start + 2s));
  EXPECT_EQ(limiter.clients(), 1u);
  EXPECT_FALSE(limiter.allow("g", start + 2s));
}

TEST(ClientRateLimiter, ZeroIntervalDisablesIt) {
  ClientRateLimiter limiter(0ms, 0);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(limiter.allow("a"));
}

TEST(HtmlEscape, EscapesMarkupCharacters) {
  EXPECT_EQ(html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain"), "plain");
}

class LandingPageTest : public ::testing::Test {
 protected:
  LandingPageTest() {
    info_.version = "1.2.3";
    info_.telemetry_path = "/metrics";
    info_.runbooks_url = "https://wiki.example/runbooks";
    stats_.pool_name = "orders";
    stats_.state = PoolState::kDegraded;
    stats_.health = HealthStatus::kDegraded;
    stats_.total_connections = 7;
    stats_.active_connections = 6;
    stats_.idle_connections = 1;
    stats_.waiting_requests = 3;
    stats_.min_size = 2;
    stats_.max_size = 8;
    stats_.total_acquisitions = 4242;
    stats_.acquire_timeouts = 17;
  }
  std::string render(const nlohmann::json& health = nlohmann::json::object()) const {
    return render_landing_page(info_, stats_, health, false);
  }
  LandingPageInfo info_;
  PoolStatistics stats_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(LandingPageTest, ColoursTheStateAndShowsTheGaugesAndCounters) {
  const std::string page = render();
  EXPECT_TRUE(contains(page, R"(<body class="health-degraded")"));
  EXPECT_TRUE(contains(page, R"(class="badge state-degraded")"));
  EXPECT_TRUE(contains(page, R"(<span class="value">6</span><span class="label">active</span>)"));
  EXPECT_TRUE(contains(page, R"(<span class="value">7 (2 / 8)</span>)"));
  EXPECT_TRUE(contains(page, R"(<span class="value">3</span><span class="label">waiting callers)"));
  EXPECT_TRUE(contains(page, R"(<span class="value">75 %</span>)"));
  EXPECT_TRUE(contains(page, R"(<span class="value">4242</span><span class="label">acquisitions)"));
  EXPECT_TRUE(
      contains(page, R"(<span class="value">17</span><span class="label">acquisition timeouts)"));
}

TEST_F(LandingPageTest, RefreshesItselfEveryInterval) {
  info_.refresh_interval = std::chrono::seconds(7);
  const std::string page = render();
  EXPECT_TRUE(contains(page, R"(data-refresh-ms="7000")"));
  EXPECT_TRUE(contains(page, R"(<noscript><meta http-equiv="refresh" content="7"></noscript>)"));
  EXPECT_TRUE(contains(page, "fetch(window.location.pathname"));
}

TEST_F(LandingPageTest, ListsTheLeaksOfTheHealthDocument) {
  stats_.leaked_connections = 1;
  const auto health = nlohmann::json::parse(
      R"({"leaks":[{"id":12,"held_seconds":95.5,"site":"orders.cc:42 <checkout>"}]})");
  const std::string page = render(health);
  EXPECT_TRUE(contains(page, "<th>id</th><th>held_seconds</th><th>site</th>"));
  EXPECT_TRUE(contains(page, "<td>12</td><td>95.5</td><td>orders.cc:42 &lt;checkout&gt;</td>"));
}

TEST_F(LandingPageTest, CountsTheLeaksWhenTheHealthDocumentHasNoList) {
  stats_.leaked_connections = 2;
  EXPECT_TRUE(contains(render(), "2 connections held longer than the leak timeout"));
  stats_.leaked_connections = 0;
  EXPECT_TRUE(contains(render(), "None held longer than the leak timeout."));
}

TEST_F(LandingPageTest, ShowsTheLastError) {
  stats_.last_error = "Cannot connect to the database: Connection refused";
  EXPECT_TRUE(contains(render(), "Cannot connect to the database: Connection refused"));
}

TEST_F(LandingPageTest, LinksPrometheusAndAlertmanagerOnlyWhenConfigured) {
  std::string page = render();
  EXPECT_FALSE(contains(page, "classic/alerts"));
  EXPECT_FALSE(contains(page, "Alertmanager"));
  info_.prometheus_url = "http://prom:9090";
  info_.alertmanager_url = "http://am:9093";
  page = render();
  EXPECT_TRUE(contains(page, R"(href="http://prom:9090/classic/alerts")"));
  EXPECT_TRUE(contains(page, R"(href="http://prom:9090/classic/targets")"));
  EXPECT_TRUE(contains(page, R"(href="http://am:9093/")"));
}

TEST_F(LandingPageTest, LinksEveryAlertsRunbook) {
  const std::string page = render();
  for (const char* alert :
       {"ConnectionPoolNoConnections", "ConnectionPoolUnhealthy", "ConnectionPoolExhausted",
        "ConnectionPoolLeak", "ConnectionPoolHighLatency", "ConnectionPoolDegraded",
        "ConnectionPoolLowCapacity", "ConnectionPoolFullyUtilized"}) {
    EXPECT_TRUE(
        contains(page, "href=\"https://wiki.example/runbooks/" + std::string(alert) + ".md\""))
        << alert;
  }
}

}  // namespace
}  // namespace poolscope::exporter
