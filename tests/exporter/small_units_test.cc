// Tests of the exporter's small pure helpers: gzip negotiation, the rate
// limiter, password redaction and HTML escaping.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

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
