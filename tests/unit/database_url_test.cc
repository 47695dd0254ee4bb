#include "poolscope/database_url.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "poolscope/error.h"

namespace poolscope {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string parse_error(const std::string& text) {
  try {
    DatabaseUrl::parse(text);
  } catch (const ConfigError& error) {
    EXPECT_EQ(error.variable(), "DATABASE_URL");
    return error.what();
  }
  return "";
}

TEST(DatabaseUrl, ParsesTheUriForm) {
  const DatabaseUrl url("postgresql://app:s3cret@db.internal:6432/orders?sslmode=require");
  EXPECT_FALSE(url.empty());
  EXPECT_EQ(url.value("user"), "app");
  EXPECT_EQ(url.value("host"), "db.internal");
  EXPECT_EQ(url.value("port"), "6432");
  EXPECT_EQ(url.value("dbname"), "orders");
  EXPECT_EQ(url.value("sslmode"), "require");
  EXPECT_TRUE(url.has("password"));
  EXPECT_EQ(url.value("application_name"), std::nullopt);
}

TEST(DatabaseUrl, ParsesTheKeyValueFormWithQuotedValues) {
  const DatabaseUrl url("host=localhost dbname=app application_name='orders api'");
  EXPECT_EQ(url.value("host"), "localhost");
  EXPECT_EQ(url.value("dbname"), "app");
  EXPECT_EQ(url.value("application_name"), "orders api");
  EXPECT_FALSE(url.has("password"));
}

TEST(DatabaseUrl, BothFormsOfTheSameSettingsAreEqual) {
  EXPECT_EQ(DatabaseUrl("postgresql://u:pw@h:5433/db"),
            DatabaseUrl("user=u password=pw host=h port=5433 dbname=db"));
  EXPECT_NE(DatabaseUrl("postgresql://u:pw@h/db"), DatabaseUrl("postgresql://u:other@h/db"));
}

TEST(DatabaseUrl, EmptyTextMeansNotSetButAUriWithoutSettingsMeansLibpqDefaults) {
  EXPECT_TRUE(DatabaseUrl().empty());
  EXPECT_TRUE(DatabaseUrl("").empty());
  EXPECT_FALSE(DatabaseUrl("postgresql://").empty());
  EXPECT_EQ(DatabaseUrl("postgresql://").connection_string_with_secrets(), "");
}

TEST(DatabaseUrl, DecodesAPercentEncodedPasswordForConnectingOnly) {
  const DatabaseUrl url("postgresql://app:p%40ss%20w%27rd@h/db");
  EXPECT_EQ(url, DatabaseUrl("host=h user=app dbname=db password='p@ss w\\'rd'"));
  EXPECT_THAT(url.connection_string_with_secrets(), HasSubstr("password='p@ss w\\'rd'"));
  EXPECT_THAT(url.redacted(), Not(HasSubstr("p@ss")));
  EXPECT_THAT(url.redacted(), Not(HasSubstr("p%40ss")));
}

TEST(DatabaseUrl, TheConnectionStringParsesBackToTheSameSettings) {
  const DatabaseUrl url("postgresql://app:pw@h1,h2:5432,5433/db?options=-c%20search_path%3Da");
  EXPECT_EQ(DatabaseUrl(url.connection_string_with_secrets()), url);
}

TEST(DatabaseUrl, RedactedMasksThePasswordAndTheSslPassword) {
  const DatabaseUrl uri("postgresql://app:s3cret@db.internal:6432/orders?sslpassword=key-secret");
  EXPECT_THAT(uri.redacted(), Not(HasSubstr("s3cret")));
  EXPECT_THAT(uri.redacted(), Not(HasSubstr("key-secret")));
  EXPECT_THAT(uri.redacted(), HasSubstr("password=***"));
  EXPECT_THAT(uri.redacted(), HasSubstr("sslpassword=***"));
  EXPECT_THAT(uri.redacted(), HasSubstr("host=db.internal"));
  EXPECT_THAT(uri.redacted(), HasSubstr("port=6432"));
  const DatabaseUrl key_value("host=x sslkey=/k.pem sslpassword='key secret' password=hunter2");
  EXPECT_THAT(key_value.redacted(), Not(HasSubstr("hunter2")));
  EXPECT_THAT(key_value.redacted(), Not(HasSubstr("key secret")));
  EXPECT_THAT(key_value.redacted(), HasSubstr("sslkey=/k.pem"));
}

TEST(DatabaseUrl, SecretsAreTheKeywordsLibpqHides) {
  EXPECT_TRUE(DatabaseUrl::is_secret_keyword("password"));
  EXPECT_TRUE(DatabaseUrl::is_secret_keyword("sslpassword"));
  EXPECT_FALSE(DatabaseUrl::is_secret_keyword("user"));
  EXPECT_FALSE(DatabaseUrl::is_secret_keyword("passfile"));
  EXPECT_THROW(DatabaseUrl("postgresql://u:pw@h/db").value("password"), std::invalid_argument);
}

TEST(DatabaseUrl, AParseErrorNamesTheVariableAndNeverTheValue) {
  for (const std::string text :
       {"postgresql://app:pw-topsecret@h/db?pw-topsecret=1", "host=db password pw-topsecret",
        "postgresql://app:pw-topsecret@[::1", "host='pw-topsecret", "pw-topsecret"}) {
    const std::string message = parse_error(text);
    EXPECT_THAT(message, HasSubstr("invalid DATABASE_URL=")) << text;
    EXPECT_THAT(message, HasSubstr("libpq cannot parse it")) << text;
    EXPECT_THAT(message, Not(HasSubstr("pw-topsecret"))) << message;
  }
  try {
    DatabaseUrl::parse("host=h port=x", "--database.url");
    ADD_FAILURE() << "accepted port=x";
  } catch (const ConfigError& error) {
    EXPECT_EQ(error.variable(), "--database.url");
  }
  // libpq's own reason, cut before the quoted fragment.
  EXPECT_THAT(parse_error("postgresql://h/db?nonsense=1"),
              HasSubstr("(invalid URI query parameter)"));
}

TEST(DatabaseUrl, ValuesLibpqChecksOnlyWhenConnectingAreRejectedAtOnce) {
  const std::string base = "postgresql://app:pw-topsecret@127.0.0.1";
  for (const std::string suffix :
       {":notaport/db", ":99999999/db", ":-1/db", ":5432/db?sslmode=bogus",
        ":5432/db?connect_timeout=soon", ":5432/db?target_session_attrs=bogus",
        ":5432/db?gssencmode=always", ":5432/db?keepalives_idle=1.5"}) {
    const std::string message = parse_error(base + suffix);
    EXPECT_THAT(message, HasSubstr("invalid DATABASE_URL=")) << suffix;
    EXPECT_THAT(message, Not(HasSubstr("pw-topsecret"))) << message;
  }
  // A URI missing its '@' makes the password the "port": named, not shown.
  const std::string message = parse_error("postgresql://app:pw-topsecret/db");
  EXPECT_THAT(message, HasSubstr("port"));
  EXPECT_THAT(message, Not(HasSubstr("pw-topsecret")));
  for (const std::string accepted :
       {"postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
        "postgresql://u@h/db?sslmode=verify-full&connect_timeout=5", "host=/tmp dbname=x",
        "postgresql:///db", "postgresql://u@h1,h2:5433/db"}) {
    EXPECT_EQ(parse_error(accepted), "") << accepted;
  }
}

TEST(DatabaseUrl, WithReplacesOrAddsAndWithoutRemoves) {
  const DatabaseUrl url("postgresql://app@h/db?application_name=orders");
  const DatabaseUrl derived = url.with("application_name", "view").with("connect_timeout", "3");
  EXPECT_EQ(derived.value("application_name"), "view");
  EXPECT_EQ(derived.value("connect_timeout"), "3");
  EXPECT_EQ(derived.value("host"), "h");
  EXPECT_EQ(url.value("application_name"), "orders");  // the original is unchanged
  EXPECT_EQ(derived.without("application_name").value("application_name"), std::nullopt);
  EXPECT_FALSE(url.with("password", "pw").without("password").has("password"));
  EXPECT_EQ(DatabaseUrl("host=h dbname=db").with("user", "u").with("port", "5433"),
            DatabaseUrl("postgresql://u@h:5433/db"));
  EXPECT_THROW(url.with("no_such_keyword", "x"), std::invalid_argument);
  EXPECT_THROW(url.with("port", "pw-topsecret"), ConfigError);
}

TEST(DatabaseUrl, ServerSettingsAreAppendedToTheStartupOptions) {
  const DatabaseUrl url = DatabaseUrl("postgresql://h/db?options=-c%20search_path%3Dapp")
                              .with_server_setting("statement_timeout", "1500")
                              .with_server_setting("application_name", "a b\\c");
  EXPECT_EQ(url.value("options"),
            "-c search_path=app -c statement_timeout=1500 -c application_name=a\\ b\\\\c");
  EXPECT_EQ(DatabaseUrl("host=h").with_server_setting("lock_timeout", "1s").value("options"),
            "-c lock_timeout=1s");
  EXPECT_THROW(DatabaseUrl("host=h").with_server_setting("a=b -c x", "1"), std::invalid_argument);
}

TEST(DatabaseUrl, ScrubbedAndMaskSecretsHideEverySecretValue) {
  const DatabaseUrl url("postgresql://u:pw-1@h/db?sslpassword=key-2");
  EXPECT_EQ(url.scrubbed("auth failed for pw-1 and key-2, pw-1"),
            "auth failed for *** and ***, ***");
  EXPECT_EQ(DatabaseUrl("host=h").scrubbed("pw-1 stays"), "pw-1 stays");
  std::string argument = "--database.url=host=h password=pw-1";
  url.mask_secrets(std::span<char>(argument.data(), argument.size()));
  EXPECT_EQ(argument, "--database.url=host=h password=****");
  // Overlapping occurrences of a secret are all covered.
  std::string overlapping = "aaab";
  DatabaseUrl("password=aa").mask_secrets(std::span<char>(overlapping.data(), overlapping.size()));
  EXPECT_EQ(overlapping, "***b");
  EXPECT_EQ(DatabaseUrl("password=aa").scrubbed("aaa"), "***a");
}

}  // namespace
}  // namespace poolscope
