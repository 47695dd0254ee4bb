#include "web_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "exporter_error.h"

namespace poolscope::exporter {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kHash = "$2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze";

// The error message of parsing `yaml`, or "" when it parses.
std::string error_of(const std::string& yaml) {
  try {
    WebConfig::parse(yaml, "web.yml");
  } catch (const UsageError& error) {
    return error.what();
  }
  return "";
}

TEST(WebConfig, EmptyFileConfiguresNothing) {
  for (const char* yaml : {"", "# only a comment\n", "---\n", "~\n"}) {
    const WebConfig config = WebConfig::parse(yaml, "web.yml");
    EXPECT_TRUE(config.basic_auth_users.empty());
    EXPECT_FALSE(config.tls_enabled);
    EXPECT_TRUE(config.response_headers.empty());
    EXPECT_EQ(config.rate_limit_interval.count(), 0);
  }
}

TEST(WebConfig, ReadsBasicAuthUsers) {
  const WebConfig config = WebConfig::parse(
      std::string("basic_auth_users:\n  alice: ") + kHash + "\n  bob: '" + kHash + "'\n",
      "web.yml");
  ASSERT_EQ(config.basic_auth_users.size(), 2u);
  EXPECT_EQ(config.basic_auth_users.at("alice"), kHash);
  EXPECT_EQ(config.basic_auth_users.at("bob"), kHash);
}

TEST(WebConfig, RejectsUnknownTopLevelKeyWithItsLine) {
  const std::string error = error_of("basic_auth_users: {}\nbasic_auth_user: {}\n");
  EXPECT_THAT(error, HasSubstr("web.yml"));
  EXPECT_THAT(error, HasSubstr("line 2"));
  EXPECT_THAT(error, HasSubstr("unknown key 'basic_auth_user'"));
  EXPECT_THAT(error, HasSubstr("basic_auth_users"));  // what is accepted
}

TEST(WebConfig, RejectsUnknownNestedKeys) {
  EXPECT_THAT(error_of("tls_server_config:\n  certfile: x\n"), HasSubstr("unknown key 'certfile'"));
  EXPECT_THAT(error_of("http_server_config:\n  http3: true\n"), HasSubstr("unknown key 'http3'"));
  EXPECT_THAT(error_of("rate_limit:\n  bursts: 3\n"), HasSubstr("unknown key 'bursts'"));
}

TEST(WebConfig, RejectsDuplicateKeys) {
  EXPECT_THAT(error_of(std::string("basic_auth_users:\n  a: ") + kHash + "\n  a: " + kHash + "\n"),
              HasSubstr("duplicate key 'a'"));
  EXPECT_THAT(error_of("rate_limit: {}\nrate_limit: {}\n"),
              HasSubstr("duplicate key 'rate_limit'"));
}

TEST(WebConfig, RejectsHashesThatAreNotBcryptWithoutEchoingThem) {
  const std::string error = error_of("basic_auth_users:\n  alice: hunter2-plaintext\n");
  EXPECT_THAT(error, HasSubstr("basic_auth_users.alice is not a bcrypt hash"));
  EXPECT_THAT(error, HasSubstr("line 2"));
  EXPECT_THAT(error, Not(HasSubstr("hunter2")));
  EXPECT_THAT(error_of("basic_auth_users:\n  alice:\n"), HasSubstr("not a bcrypt hash"));
  EXPECT_THAT(error_of("basic_auth_users:\n  alice: [a, b]\n"), HasSubstr("must be a string"));
}

TEST(WebConfig, AcceptsTheThreeBcryptPrefixesOnly) {
  std::string hash = kHash;
  for (const char* prefix : {"$2a$", "$2b$", "$2y$"}) {
    hash.replace(0, 4, prefix);
    EXPECT_TRUE(is_bcrypt_hash(hash)) << hash;
  }
  hash.replace(0, 4, "$2x$");
  EXPECT_FALSE(is_bcrypt_hash(hash));
  hash.replace(0, 4, "$1$a");
  EXPECT_FALSE(is_bcrypt_hash(hash));
}

TEST(WebConfig, BcryptHashShapeIsChecked) {
  const std::string good = kHash;
  EXPECT_FALSE(is_bcrypt_hash(good.substr(0, 59)));          // too short
  EXPECT_FALSE(is_bcrypt_hash(good + "x"));                  // too long
  EXPECT_FALSE(is_bcrypt_hash("$2y$03$" + good.substr(7)));  // cost below 4
  EXPECT_FALSE(is_bcrypt_hash("$2y$32$" + good.substr(7)));  // cost above 31
  EXPECT_FALSE(is_bcrypt_hash("$2y$1a$" + good.substr(7)));  // cost not a number
  EXPECT_FALSE(is_bcrypt_hash(good.substr(0, 59) + "!"));    // outside bcrypt's alphabet
  EXPECT_TRUE(is_bcrypt_hash("$2y$04$" + good.substr(7)));
  EXPECT_TRUE(is_bcrypt_hash("$2y$31$" + good.substr(7)));
}

TEST(WebConfig, DetectsTlsConfiguration) {
  EXPECT_TRUE(WebConfig::parse("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n", "w")
                  .tls_enabled);
  EXPECT_FALSE(WebConfig::parse("tls_server_config: {}\n", "w").tls_enabled);
  EXPECT_FALSE(WebConfig::parse("tls_server_config:\n  min_version: TLS13\n", "w").tls_enabled);
}

TEST(WebConfig, ValidatesTlsSettingsLikeTheToolkit) {
  EXPECT_THAT(error_of("tls_server_config:\n  key_file: a.key\n"),
              HasSubstr("missing one of cert or cert_file"));
  EXPECT_THAT(error_of("tls_server_config:\n  cert_file: a.crt\n"),
              HasSubstr("missing one of key or key_file"));
  EXPECT_THAT(
      error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n"),
      HasSubstr("invalid client_auth_type 'Maybe'"));
  EXPECT_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n"),
              HasSubstr("client_auth_type"));
  EXPECT_THAT(error_of("tls_server_config:\n  min_version: TLS14\n"),
              HasSubstr("unknown TLS version 'TLS14'"));
  EXPECT_THAT(error_of("tls_server_config:\n  curve_preferences: [CurveP256, Curve25519]\n"),
              HasSubstr("unknown curve 'Curve25519'"));
  EXPECT_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                       "  client_allowed_sans: [x]\n"),
              HasSubstr("client_allowed_sans requires"));
  EXPECT_EQ(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                     "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: c\n"
                     "  client_allowed_sans: [x]\n  prefer_server_cipher_suites: false\n"),
            "");
}

TEST(WebConfig, ReadsAllowedResponseHeaders) {
  const WebConfig config = WebConfig::parse(
      "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
      "    X-Content-Type-Options: nosniff\n    Content-Security-Policy: \"default-src 'self'\"\n",
      "web.yml");
  EXPECT_EQ(config.response_headers.size(), 3u);
}

TEST(WebConfig, RejectsHeadersTheToolkitDoesNotAllow) {
  EXPECT_THAT(error_of("http_server_config:\n  headers:\n    X-Powered-By: me\n"),
              HasSubstr("unknown key 'X-Powered-By'"));
  EXPECT_THAT(error_of("http_server_config:\n  headers:\n    X-Frame-Options: allow\n"),
              HasSubstr("invalid value 'allow' for header X-Frame-Options"));
  EXPECT_THAT(error_of("http_server_config:\n  http2: maybe\n"), HasSubstr("true or false"));
}

TEST(WebConfig, ReadsRateLimit) {
  const WebConfig config =
      WebConfig::parse("rate_limit:\n  interval: 250ms\n  burst: 20\n", "web.yml");
  EXPECT_EQ(config.rate_limit_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(config.rate_limit_burst, 20);
  EXPECT_THAT(error_of("rate_limit:\n  interval: soon\n"), HasSubstr("rate_limit.interval"));
  EXPECT_THAT(error_of("rate_limit:\n  burst: many\n"), HasSubstr("must be an integer"));
  EXPECT_THAT(error_of("rate_limit:\n  burst: -1\n"), HasSubstr("must not be negative"));
}

TEST(WebConfig, RejectsWrongShapes) {
  EXPECT_THAT(error_of("- a\n- b\n"), HasSubstr("must be a mapping"));
  EXPECT_THAT(error_of("basic_auth_users: [alice]\n"), HasSubstr("must be a mapping"));
  EXPECT_THAT(error_of("tls_server_config: yes\n"), HasSubstr("must be a mapping"));
}

TEST(WebConfig, ReportsYamlSyntaxErrorsWithTheirLine) {
  const std::string error = error_of("basic_auth_users:\n  alice: [unclosed\n");
  EXPECT_THAT(error, HasSubstr("YAML syntax error"));
  EXPECT_THAT(error, HasSubstr("web.yml"));
}

TEST(WebConfig, ErrorsAreOneLine) {
  for (const char* yaml : {"nope: 1\n", "basic_auth_users:\n  a: b\n", "a: [\n"}) {
    EXPECT_EQ(error_of(yaml).find('\n'), std::string::npos) << yaml;
  }
}

TEST(WebConfig, LoadsFiles) {
  char path[] = "/tmp/poolscope-web-config-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "basic_auth_users:\n  alice: " << kHash << "\n";
  EXPECT_EQ(WebConfig::load_file(path).basic_auth_users.size(), 1u);
  std::remove(path);
  EXPECT_THROW(WebConfig::load_file(path), UsageError);
}

}  // namespace
}  // namespace poolscope::exporter
