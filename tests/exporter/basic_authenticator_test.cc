#include "basic_authenticator.h"

#include <crypt.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace poolscope::exporter {
namespace {

// A bcrypt hash made now, with the cheapest cost so tests stay fast.
std::string bcrypt(const std::string& password, const char* prefix = "$2b$") {
  std::array<char, CRYPT_GENSALT_OUTPUT_SIZE> setting{};
  if (crypt_gensalt_rn(prefix, 4, nullptr, 0, setting.data(), static_cast<int>(setting.size())) ==
      nullptr) {
    throw std::runtime_error("crypt_gensalt_rn failed");
  }
  auto data = std::make_unique<crypt_data>();
  const char* hash = crypt_r(password.c_str(), setting.data(), data.get());
  if (hash == nullptr || hash[0] == '*') throw std::runtime_error("crypt_r failed");
  return hash;
}

std::string basic(const std::string& user, const std::string& password) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::string raw = user + ":" + password;
  std::string encoded;
  for (std::size_t i = 0; i < raw.size(); i += 3) {
    unsigned group = static_cast<unsigned char>(raw[i]) << 16;
    if (i + 1 < raw.size()) group |= static_cast<unsigned char>(raw[i + 1]) << 8;
    if (i + 2 < raw.size()) group |= static_cast<unsigned char>(raw[i + 2]);
    encoded += kAlphabet[(group >> 18) & 63];
    encoded += kAlphabet[(group >> 12) & 63];
    encoded += i + 1 < raw.size() ? kAlphabet[(group >> 6) & 63] : '=';
    encoded += i + 2 < raw.size() ? kAlphabet[group & 63] : '=';
  }
  return "Basic " + encoded;
}

class BasicAuthenticatorTest : public ::testing::Test {
 protected:
  BasicAuthenticator authenticator{{{"alice", bcrypt("s3cret")}, {"bob", bcrypt("pa:ss")}}};
};

TEST_F(BasicAuthenticatorTest, AcceptsTheRightPassword) {
  EXPECT_TRUE(authenticator.authorize(basic("alice", "s3cret")));
  EXPECT_TRUE(authenticator.authorize(basic("bob", "pa:ss")));  // ':' inside the password
}

TEST_F(BasicAuthenticatorTest, RejectsWrongPasswordAndUnknownUser) {
  EXPECT_FALSE(authenticator.authorize(basic("alice", "S3cret")));
  EXPECT_FALSE(authenticator.authorize(basic("alice", "")));
  EXPECT_FALSE(authenticator.authorize(basic("mallory", "s3cret")));
  EXPECT_FALSE(authenticator.authorize(basic("", "")));
}

TEST_F(BasicAuthenticatorTest, RejectsMissingOrMalformedCredentials) {
  EXPECT_FALSE(authenticator.authorize(""));
  EXPECT_FALSE(authenticator.authorize("Bearer abc"));
  EXPECT_FALSE(authenticator.authorize("Basic"));
  EXPECT_FALSE(authenticator.authorize("Basic !!!!"));
  EXPECT_FALSE(authenticator.authorize("Basic YWxpY2U="));  // "alice", no colon
}

TEST_F(BasicAuthenticatorTest, SchemeIsCaseInsensitive) {
  std::string header = basic("alice", "s3cret");
  header.replace(0, 5, "bAsIc");
  EXPECT_TRUE(authenticator.authorize(header));
}

TEST_F(BasicAuthenticatorTest, RejectsPasswordsWithNulBytes) {
  EXPECT_FALSE(authenticator.check("alice", std::string("s3cret\0tail", 11)));
}

TEST_F(BasicAuthenticatorTest, CachesSuccessfulChecksOnly) {
  EXPECT_EQ(authenticator.cached(), 0u);
  EXPECT_FALSE(authenticator.check("alice", "wrong"));
  EXPECT_FALSE(authenticator.check("nobody", "wrong"));
  EXPECT_EQ(authenticator.cached(), 0u);
  EXPECT_TRUE(authenticator.check("alice", "s3cret"));
  EXPECT_TRUE(authenticator.check("alice", "s3cret"));
  EXPECT_EQ(authenticator.cached(), 1u);
  // A cached success does not make a different password pass.
  EXPECT_FALSE(authenticator.check("alice", "s3cret "));
}

TEST(BasicAuthenticator, CacheIsBounded) {
  BasicAuthenticator authenticator(
      {{"alice", bcrypt("a")}, {"bob", bcrypt("b")}, {"carol", bcrypt("c")}},
      /*cache_capacity=*/2);
  EXPECT_TRUE(authenticator.check("alice", "a"));
  EXPECT_TRUE(authenticator.check("bob", "b"));
  EXPECT_TRUE(authenticator.check("carol", "c"));
  EXPECT_EQ(authenticator.cached(), 2u);
  EXPECT_TRUE(authenticator.check("alice", "a"));  // evicted, checked again with bcrypt
}

TEST(BasicAuthenticator, AcceptsHashesOfEveryBcryptPrefix) {
  for (const char* prefix : {"$2a$", "$2b$", "$2y$"}) {
    BasicAuthenticator authenticator({{"alice", bcrypt("pw", prefix)}});
    EXPECT_TRUE(authenticator.check("alice", "pw")) << prefix;
    EXPECT_FALSE(authenticator.check("alice", "px")) << prefix;
  }
}

TEST(BasicAuthenticator, DisabledWithoutUsers) {
  BasicAuthenticator authenticator({});
  EXPECT_FALSE(authenticator.enabled());
  EXPECT_TRUE(authenticator.authorize(""));
}

TEST(BasicCredentials, ParsesUserAndPassword) {
  std::string user, password;
  ASSERT_TRUE(parse_basic_credentials(basic("alice", "p:w"), user, password));
  EXPECT_EQ(user, "alice");
  EXPECT_EQ(password, "p:w");
  ASSERT_TRUE(
      parse_basic_credentials("  Basic   " + basic("a", "b").substr(6) + " ", user, password));
  EXPECT_EQ(user, "a");
  EXPECT_FALSE(parse_basic_credentials("Basic YQ=", user, password));    // bad length
  EXPECT_FALSE(parse_basic_credentials("Basic YQ=a", user, password));   // data after padding
  EXPECT_FALSE(parse_basic_credentials("Basicx YTpi", user, password));  // other scheme
}

TEST(BasicAuthenticatorLimits, ChecksBeyondTheConcurrencyLimitAreBusyNotQueued) {
  // Cost 10: each check takes long enough for the threads to overlap.
  std::array<char, CRYPT_GENSALT_OUTPUT_SIZE> setting{};
  crypt_gensalt_rn("$2b$", 10, nullptr, 0, setting.data(), static_cast<int>(setting.size()));
  auto data = std::make_unique<crypt_data>();
  BasicAuthenticator authenticator({{"alice", crypt_r("s3cret", setting.data(), data.get())}}, 1024,
                                   1);
  ASSERT_TRUE(authenticator.check("alice", "s3cret"));  // cached from now on
  ASSERT_TRUE(authenticator.is_cached(basic("alice", "s3cret")));

  std::atomic<int> busy{0};
  std::atomic<int> refused{0};
  std::atomic<int> cached_ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 3; ++round) {
        switch (authenticator.verify(basic("alice", "guess" + std::to_string(i)))) {
          case BasicAuthenticator::Verdict::kBusy:
            ++busy;
            break;
          case BasicAuthenticator::Verdict::kRefused:
            ++refused;
            break;
          case BasicAuthenticator::Verdict::kAuthorized:
            ADD_FAILURE() << "a wrong password was accepted";
            break;
        }
        // Cached credentials never wait for a bcrypt slot.
        if (authenticator.verify(basic("alice", "s3cret")) ==
            BasicAuthenticator::Verdict::kAuthorized) {
          ++cached_ok;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_GT(busy.load(), 0);
  EXPECT_GT(refused.load(), 0);
  EXPECT_EQ(busy.load() + refused.load(), 24);
  EXPECT_EQ(cached_ok.load(), 24);
}

TEST_F(BasicAuthenticatorTest, IsCachedNeverRunsBcrypt) {
  EXPECT_FALSE(authenticator.is_cached(basic("alice", "s3cret")));
  EXPECT_FALSE(authenticator.is_cached(""));
  EXPECT_TRUE(authenticator.authorize(basic("alice", "s3cret")));
  EXPECT_TRUE(authenticator.is_cached(basic("alice", "s3cret")));
  EXPECT_FALSE(authenticator.is_cached(basic("alice", "s3cre")));
}

}  // namespace
}  // namespace poolscope::exporter
