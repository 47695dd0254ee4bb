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

TEST(WebConfig, TlsSettingsReadTheFilesRelativeToTheConfiguration) {
  char directory[] = "/tmp/poolscope-web-config-XXXXXX";
  ASSERT_NE(mkdtemp(directory), nullptr);
  const std::string base = directory;
  std::ofstream(base + "/server.crt") << "CERTIFICATE";
  std::ofstream(base + "/server.key") << "KEY";
  std::ofstream(base + "/clients.crt") << "CLIENT CA";
  std::ofstream(base + "/web.yml")
      << "tls_server_config:\n  cert_file: server.crt\n  key_file: " << base
      << "/server.key\n  client_ca_file: clients.crt\n"
         "  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n"
         "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
         "  curve_preferences: [X25519, CurveP256]\n";
  const WebConfig config = WebConfig::load_file(base + "/web.yml");
  ASSERT_TRUE(config.tls_enabled);
  const TlsServerSettings settings = config.tls_server_settings();
  EXPECT_EQ(settings.certificate_pem, "CERTIFICATE");
  EXPECT_EQ(settings.private_key_pem, "KEY");
  EXPECT_EQ(settings.client_ca_pem, "CLIENT CA");
  EXPECT_EQ(settings.client_auth, TlsServerSettings::ClientAuth::kRequireAndVerifyClientCert);
  EXPECT_EQ(settings.min_version, 0x0304);
  EXPECT_EQ(settings.max_version, 0x0304);
  EXPECT_EQ(settings.cipher_list, "ECDHE-RSA-AES128-GCM-SHA256");
  EXPECT_EQ(settings.groups, "X25519:P-256");

  std::remove((base + "/server.crt").c_str());
  try {
    (void)config.tls_server_settings();
    FAIL() << "a missing certificate file was accepted";
  } catch (const UsageError& error) {
    EXPECT_THAT(error.what(), HasSubstr("tls_server_config.cert_file"));
    EXPECT_THAT(error.what(), HasSubstr(base + "/server.crt"));
  }
  for (const char* name : {"/server.key", "/clients.crt", "/web.yml"}) {
    std::remove((base + name).c_str());
  }
  rmdir(directory);
}

TEST(WebConfig, TlsSettingsTheServerCannotHonourAreRefused) {
  EXPECT_THAT(error_of("tls_server_config:\n  cert_file: a\n  key_file: b\n"
                       "  cipher_suites: [TLS_MADE_UP]\n"),
              HasSubstr("unknown cipher suite 'TLS_MADE_UP'"));
  const WebConfig sans = WebConfig::parse(
      "tls_server_config:\n  cert: x\n  key: y\n  client_ca: z\n"
      "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [a]\n",
      "w");
  EXPECT_THROW(sans.tls_server_settings(), UsageError);
  const WebConfig versions = WebConfig::parse(
      "tls_server_config:\n  cert: x\n  key: y\n  min_version: TLS13\n  max_version: TLS12\n", "w");
  EXPECT_THROW(versions.tls_server_settings(), UsageError);
}

}  // namespace
}  // namespace poolscope::exporter
