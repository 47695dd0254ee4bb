// Tests of the exporter's small pure helpers: gzip negotiation, the rate
// limiter, password redaction and HTML escaping.
#include <gtest/gtest.h>

#include <chrono>
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

TEST(DatabasePassword, ComesFromEveryUrlForm) {
  EXPECT_EQ(database_password("postgresql://u:pw-1@h:5432/db"), "pw-1");
  EXPECT_EQ(database_password("postgresql://u@h/db?password=pw-2"), "pw-2");
  EXPECT_EQ(database_password("host=h user=u password='pw 3' dbname=db"), "pw 3");
  EXPECT_EQ(database_password("postgresql://u@h/db"), "");
  EXPECT_EQ(database_password("host=h password"), "");  // unparseable
}

TEST(DatabaseSecrets, AreThePasswordAndTheSslPassword) {
  EXPECT_EQ(database_secrets("postgresql://u:pw-1@h/db?sslpassword=key-2"),
            (std::vector<std::string>{"pw-1", "key-2"}));
  EXPECT_EQ(database_secrets("host=h sslpassword='k 3'"), (std::vector<std::string>{"k 3"}));
  EXPECT_TRUE(database_secrets("host=h").empty());
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

TEST(ScrubSecret, ReplacesEveryOccurrence) {
  std::string text = "pw-1 failed for pw-1@host";
  scrub_secret(text, "pw-1");
  EXPECT_EQ(text, "*** failed for ***@host");
  std::string untouched = "nothing here";
  scrub_secret(untouched, "");
  EXPECT_EQ(untouched, "nothing here");
  std::string overlapping = "aaaa";
  scrub_secret(overlapping, "aa");
  EXPECT_EQ(overlapping, "******");
}

TEST(HtmlEscape, EscapesMarkupCharacters) {
  EXPECT_EQ(html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain"), "plain");
}

}  // namespace
}  // namespace poolscope::exporter
