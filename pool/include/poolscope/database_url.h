#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace poolscope {

/// A PostgreSQL connection string (DATABASE_URL), parsed once by libpq.
///
/// Accepts what libpq accepts: a URI such as
/// `postgresql://user:password@host:5432/dbname?sslmode=require` (percent-encoding
/// decoded) or key=value pairs such as `host=localhost dbname=app`. It holds
/// the settings the string sets, as keyword/value pairs in libpq's keyword
/// order.
///
/// The secret settings (password and sslpassword, the ones libpq marks as
/// secret) leave the object only through connection_string_with_secrets(),
/// which is for connecting. There is no operator<<, no conversion to string
/// and no formatter; log redacted(). A default-constructed DatabaseUrl, or one
/// parsed from "", is empty ("not set").
///
/// A value type: copies are independent, const members may be called from any
/// thread.
class DatabaseUrl {
 public:
  /// Empty: no connection string given.
  DatabaseUrl() = default;
  /// Parses `text` (see parse(); errors name DATABASE_URL); implicit so that a configuration built
  /// in code reads `config.database_url = "postgresql://app@db/app";`.
  DatabaseUrl(const std::string& text);  // NOLINT(google-explicit-constructor)
  DatabaseUrl(const char* text);         // NOLINT(google-explicit-constructor)

  /// Parses a URI or key=value string with libpq, then checks the values
  /// libpq itself checks only when connecting (port, the whole-number
  /// timeouts, sslmode, target_session_attrs, gssencmode, channel_binding),
  /// so that a string no connection can ever be made with is rejected at
  /// start. "" gives an empty DatabaseUrl. Throws ConfigError naming
  /// `source` (the variable or flag the text came from) with libpq's reason;
  /// neither the value nor any part of it is quoted, since it may contain a
  /// password.
  static DatabaseUrl parse(std::string_view text, const std::string& source = "DATABASE_URL");

  /// True when no connection string was given ("" or default-constructed).
  /// A string that sets nothing ("postgresql://") is not empty: it means
  /// libpq's defaults.
  bool empty() const noexcept { return !given_; }

  /// True when `keyword` is set (to a non-empty value); works for the secret
  /// keywords too.
  bool has(std::string_view keyword) const noexcept;

  /// The value of `keyword` ("host", "port", "dbname", "user",
  /// "application_name", …), or nullopt when it is not set. Throws
  /// std::invalid_argument for a secret keyword (password, sslpassword).
  std::optional<std::string> value(std::string_view keyword) const;

  /// A copy with `keyword` set to `value` (replacing the old value). Throws
  /// std::invalid_argument when libpq knows no such keyword, and ConfigError
  /// for a value libpq would refuse when connecting (see parse()).
  DatabaseUrl with(std::string_view keyword, std::string value) const;

  /// A copy whose `options` (the server's start-up options) end with
  /// `-c setting=setting_value`, so every connection starts with that
  /// setting without an extra round trip. Spaces and backslashes in the value are
  /// escaped as libpq requires. Throws std::invalid_argument for an empty
  /// `setting` or one that is not a plain name.
  DatabaseUrl with_server_setting(std::string_view setting, std::string_view setting_value) const;

  /// A copy without `keyword`.
  DatabaseUrl without(std::string_view keyword) const;

  /// The settings as a libpq key=value string, every value quoted, secrets
  /// included: for opening connections only, never for display.
  std::string connection_string_with_secrets() const;

  /// The settings as "keyword=value …" with every secret value shown as
  /// "***": safe for logs and error messages. "" when empty.
  std::string redacted() const;

  /// `text` with every occurrence of a secret value replaced by "***": for
  /// texts from outside (libpq and server messages) before they are shown.
  std::string scrubbed(std::string text) const;

  /// Overwrites every occurrence of a secret value in `text` with '*', in
  /// place and keeping the length (for argv, which ps shows).
  void mask_secrets(std::span<char> text) const;

  /// True for the keywords libpq treats as secret (password, sslpassword).
  static bool is_secret_keyword(std::string_view keyword);

  /// The `connect_timeout` value (whole seconds) that waits at least
  /// `timeout`: rounded up, and at least 2, which libpq raises smaller
  /// values to anyway.
  static std::int64_t connect_timeout_seconds(std::chrono::milliseconds timeout);

  /// Same settings with the same values.
  bool operator==(const DatabaseUrl&) const = default;

 private:
  struct Setting {
    std::string keyword;
    std::string value;
    bool operator==(const Setting&) const = default;
  };

  std::vector<std::string_view> secret_values() const;

  std::vector<Setting> settings_;
  bool given_ = false;
};

}  // namespace poolscope
