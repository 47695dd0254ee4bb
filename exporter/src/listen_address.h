#pragma once

#include <string>
#include <string_view>

namespace poolscope::exporter {

/// Where the HTTP server listens: `--web.listen-address` in the Prometheus
/// exporter form "[host]:port". An empty host means every IPv4 interface;
/// port 0 asks the kernel for a free port (read it back from the server).
struct ListenAddress {
  std::string host;  ///< IPv4 address ("" = all interfaces); "localhost" becomes 127.0.0.1
  int port = 0;

  /// Parses "[host]:port". Throws UsageError naming the flag, the value and the
  /// accepted form (IPv6 is refused: Debian's civetweb is built without it).
  static ListenAddress parse(std::string_view text);

  /// civetweb's `listening_ports` value: "port" or "host:port".
  std::string civetweb_spec() const;
};

}  // namespace poolscope::exporter
