#pragma once

#include <string>

namespace poolscope::exporter {

/// What the HTTP server needs to serve TLS, in the terms of the exporter
/// toolkit's `tls_server_config`, with certificates and keys already read.
/// A plain value: no thread-safety concerns.
struct TlsServerSettings {
  /// Who must present a client certificate, and whether it is verified.
  enum class ClientAuth {
    kNoClientCert,                ///< none asked for
    kRequestClientCert,           ///< asked for, not required, not verified
    kRequireAnyClientCert,        ///< required, not verified
    kVerifyClientCertIfGiven,     ///< not required; verified against the client CA when given
    kRequireAndVerifyClientCert,  ///< required and verified against the client CA
  };

  std::string certificate_pem;  ///< server certificate chain (PEM text)
  std::string private_key_pem;  ///< its private key (PEM text)
  std::string client_ca_pem;    ///< CA certificates for client certificates ("" = none)
  ClientAuth client_auth = ClientAuth::kNoClientCert;
  /// Lowest and highest protocol version, 0x0301 (TLS 1.0) to 0x0304 (TLS 1.3).
  int min_version = 0x0303;
  int max_version = 0x0304;
  /// OpenSSL cipher list for TLS 1.2 and older ("" = OpenSSL's default).
  std::string cipher_list;
  /// OpenSSL group list for key exchange, e.g. "X25519:P-256" ("" = default).
  std::string groups;
  /// The server's cipher order wins over the client's.
  bool prefer_server_cipher_suites = true;
};

}  // namespace poolscope::exporter
