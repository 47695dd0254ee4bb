#include "listen_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <charconv>

#include "exporter_error.h"

namespace poolscope::exporter {

ListenAddress ListenAddress::parse(std::string_view text) {
  auto reject = [&](std::string_view why) -> UsageError {
    return UsageError(
        fmt::format("invalid --web.listen-address='{}': {}; expected [IPv4 address]:port such as "
                    ":9839 or 127.0.0.1:9839",
                    text, why));
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) throw reject("missing ':port'");
  std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  if (!host.empty() && (host.front() == '[' || host.find(':') != std::string::npos)) {
    throw reject("IPv6 addresses are not supported by this build of civetweb");
  }
  int port = -1;
  const auto [end, error] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() ||
      port < 0 || port > 65535) {
    throw reject("the port must be a number from 0 to 65535");
  }
  if (host == "localhost") host = "127.0.0.1";
  in_addr parsed{};
  if (!host.empty() && inet_pton(AF_INET, host.c_str(), &parsed) != 1) {
    throw reject("the host must be an IPv4 address (or localhost)");
  }
  return ListenAddress{host, port};
}

std::string ListenAddress::civetweb_spec() const {
  return host.empty() ? std::to_string(port) : fmt::format("{}:{}", host, port);
}

}  // namespace poolscope::exporter
