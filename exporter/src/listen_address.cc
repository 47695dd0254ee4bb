#include "listen_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <charconv>

#include "exporter_error.h"

namespace poolscope::exporter {

ListenAddress ListenAddress::parse(std::string_view text) {
  auto reject = [&](std::string_view why) -> UsageError {
    return UsageError(
        fmt::format("invalid --web.listen-address='{}': {}; expected [address]:port such as "
                    ":9839, 127.0.0.1:9839 or [::1]:9839",
                    text, why));
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) throw reject("missing ':port'");
  std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  bool bracketed = false;
  if (!host.empty() && host.front() == '[') {
    if (host.size() < 2 || host.back() != ']')
      throw reject("an IPv6 address needs its closing ']'");
    host = host.substr(1, host.size() - 2);
    bracketed = true;
  }
  if (!bracketed && host.find(':') != std::string::npos) {
    throw reject("write an IPv6 address in brackets");
  }
  int port = -1;
  const auto [end, error] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() ||
      port < 0 || port > 65535) {
    throw reject("the port must be a number from 0 to 65535");
  }
  if (bracketed) {
    in6_addr parsed{};
    if (inet_pton(AF_INET6, host.c_str(), &parsed) != 1) {
      throw reject("the host in brackets must be an IPv6 address");
    }
    return ListenAddress{host, port};
  }
  if (host == "localhost") host = "127.0.0.1";
  in_addr parsed{};
  if (!host.empty() && inet_pton(AF_INET, host.c_str(), &parsed) != 1) {
    throw reject("the host must be an IPv4 address, a bracketed IPv6 address or localhost");
  }
  return ListenAddress{host, port};
}

std::string ListenAddress::to_string() const {
  return is_ipv6() ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

}  // namespace poolscope::exporter
