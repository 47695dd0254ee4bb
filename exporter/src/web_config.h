#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tls_server_settings.h"

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
/// Parsing records the TLS settings without reading the files they name;
/// tls_server_settings() reads them. A plain value: no thread-safety concerns.
struct WebConfig {
  /// tls_server_config as written; file paths made absolute by load_file().
  struct Tls {
    std::string cert_file, key_file, client_ca_file;  ///< paths ("" = not given)
    std::string cert, key, client_ca;                 ///< inline PEM ("" = not given)
    std::string client_auth_type;                     ///< "" = NoClientCert
    std::string min_version, max_version;             ///< "TLS12", … ("" = default)
    std::vector<std::string> cipher_suites;           ///< Go names
    std::vector<std::string> curve_preferences;       ///< CurveP256, …, X25519
    std::vector<std::string> client_allowed_sans;
    bool prefer_server_cipher_suites = true;
  };

  /// User name -> bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31). Empty: no auth.
  std::map<std::string, std::string> basic_auth_users;
  /// True when tls_server_config sets a certificate, key, client CA or client
  /// auth type (the toolkit's TLSConfig.IsEnabled()).
  bool tls_enabled = false;
  /// Meaningful when tls_enabled.
  Tls tls;
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

  /// The TLS settings for the HTTP server, reading the certificate, key and
  /// client CA files. Call only when tls_enabled. Throws UsageError naming the
  /// file and the setting when a file cannot be read or a setting cannot be
  /// served (client_allowed_sans, an unknown cipher suite).
  TlsServerSettings tls_server_settings() const;
};

/// True when `hash` is a bcrypt hash libxcrypt can check: "$2a$", "$2b$" or
/// "$2y$", a two-digit cost from 04 to 31, "$" and 53 characters of bcrypt's
/// base64 alphabet. Pure function.
bool is_bcrypt_hash(std::string_view hash) noexcept;

}  // namespace poolscope::exporter
