#pragma once

#include <string>
#include <string_view>

namespace poolscope::exporter {

/// Where the HTTP server listens: `--web.listen-address` in the Prometheus
/// exporter form "[host]:port", the host an IPv4 address or a bracketed IPv6
/// one ("[::1]:9839"). An empty host means every interface, IPv4 and IPv6;
/// port 0 asks the kernel for a free port (read it back from the server).
struct ListenAddress {
  /// IPv4 or IPv6 address without brackets ("" = all interfaces);
  /// "localhost" becomes 127.0.0.1.
  std::string host;
  int port = 0;

  /// Parses "[host]:port". Throws UsageError naming the flag, the value and the
  /// accepted forms.
  static ListenAddress parse(std::string_view text);

  /// True when `host` is an IPv6 address.
  bool is_ipv6() const noexcept { return host.find(':') != std::string::npos; }

  /// The form parse() accepts: ":9839", "127.0.0.1:9839", "[::1]:9839".
  std::string to_string() const;
};

}  // namespace poolscope::exporter
