#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace poolscope::exporter {

/// The `--web.config.file` of the Prometheus exporter toolkit, validated the
/// way `promtool check web-config` does: unknown or duplicate keys, values of
/// the wrong type, unknown enumeration values and malformed bcrypt hashes are
/// errors.
///
///     tls_server_config: {cert_file, key_file, cert, key, client_ca_file, client_ca,
///                         client_auth_type, client_allowed_sans, min_version,
///                         max_version, cipher_suites, curve_preferences,
///                         prefer_server_cipher_suites}
///     http_server_config: {http2, headers: {Content-Security-Policy, X-Frame-Options,
///                          X-Content-Type-Options, X-XSS-Protection,
///                          Strict-Transport-Security}}
///     basic_auth_users: {<user>: <bcrypt hash>, …}
///     rate_limit: {interval: <duration>, burst: <int>}
///
/// Parsing only records whether TLS is configured (tls_enabled); serving TLS
/// is the caller's decision. A plain value: no thread-safety concerns.
struct WebConfig {
  /// User name -> bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31). Empty: no auth.
  std::map<std::string, std::string> basic_auth_users;
  /// True when tls_server_config sets a certificate, key, client CA or client
  /// auth type (the toolkit's TLSConfig.IsEnabled()).
  bool tls_enabled = false;
  /// http_server_config.headers, added to every response.
  std::vector<std::pair<std::string, std::string>> response_headers;
  /// rate_limit.interval; zero disables rate limiting.
  std::chrono::nanoseconds rate_limit_interval{0};
  /// rate_limit.burst.
  long long rate_limit_burst = 0;

  /// Reads and validates `path`. Throws UsageError with one line naming the
  /// file, the line, the key and what is accepted.
  static WebConfig load_file(const std::string& path);

  /// Validates YAML text; `source` names it in error messages.
  static WebConfig parse(std::string_view yaml, const std::string& source);
};

/// True when `hash` is a bcrypt hash libxcrypt can check: "$2a$", "$2b$" or
/// "$2y$", a two-digit cost from 04 to 31, "$" and 53 characters of bcrypt's
/// base64 alphabet. Pure function.
bool is_bcrypt_hash(std::string_view hash) noexcept;

}  // namespace poolscope::exporter
