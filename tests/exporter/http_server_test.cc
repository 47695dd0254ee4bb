#include "http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace poolscope::exporter {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A blocking loopback client speaking raw bytes, so tests can send what no
// HTTP library would.
class RawClient {
 public:
  explicit RawClient(int port, bool ipv6 = false) {
    fd_ = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    int status = -1;
    if (ipv6) {
      sockaddr_in6 address{};
      address.sin6_family = AF_INET6;
      address.sin6_port = htons(static_cast<uint16_t>(port));
      address.sin6_addr = in6addr_loopback;
      status = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    } else {
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<uint16_t>(port));
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      status = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    }
    if (status != 0) throw std::runtime_error("connect failed");
  }
  ~RawClient() { close(fd_); }

  void send_all(const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;  // the server may close early (413); that is fine
      sent += static_cast<std::size_t>(n);
    }
  }

  // Reads one response: headers, then Content-Length bytes of body (or until
  // close when there is none). Gives up after `timeout` of silence.
  std::string read_response(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::string data;
    std::size_t wanted = std::string::npos;
    while (wanted == std::string::npos || data.size() < wanted) {
      pollfd poll_fd{fd_, POLLIN, 0};
      if (poll(&poll_fd, 1, static_cast<int>(timeout.count())) <= 0) break;
      char buffer[65536];
      const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      data.append(buffer, static_cast<std::size_t>(n));
      const std::size_t end = data.find("\r\n\r\n");
      if (wanted == std::string::npos && end != std::string::npos) {
        const std::string head = data.substr(0, end);
        const std::size_t length_at = head.find("Content-Length: ");
        const std::size_t length =
            length_at == std::string::npos ? 0 : std::stoul(head.substr(length_at + 16));
        const bool is_head_response = last_was_head_;
        wanted = end + 4 + (is_head_response ? 0 : length);
      }
    }
    return data;
  }

  std::string request(const std::string& raw, bool head = false) {
    last_was_head_ = head;
    send_all(raw);
    return read_response();
  }

  // True once the server has closed the connection.
  bool closed_by_server() {
    pollfd poll_fd{fd_, POLLIN, 0};
    if (poll(&poll_fd, 1, 5000) <= 0) return false;
    char byte;
    return recv(fd_, &byte, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
  bool closed_ = false;
  bool last_was_head_ = false;
};

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() {
    HttpServer::Options options;
    options.address = ListenAddress::parse("127.0.0.1:0");
    options.worker_threads = 4;
    options.max_body_bytes = 1024;
    server_ = std::make_unique<HttpServer>(options, [this](const HttpRequest& request) {
      ++handled_;
      HttpResponse response;
      response.content_type = "text/plain";
      response.body =
          request.method + " " + request.path + " " + std::to_string(request.body.size());
      response.headers.emplace_back("X-Test", "yes");
      return response;
    });
  }

  std::string get(const std::string& path) {
    RawClient client(server_->port());
    return client.request("GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  }

  std::atomic<int> handled_{0};
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesTheHandlersResponseOnTheBoundPort) {
  EXPECT_GT(server_->port(), 0);
  const std::string response = get("/metrics");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain\r\n"));
  EXPECT_THAT(response, HasSubstr("X-Test: yes\r\n"));
  EXPECT_THAT(response, HasSubstr("\r\n\r\nGET /metrics 0"));
}

TEST_F(HttpServerTest, KeepsHttp11ConnectionsAlive) {
  RawClient client(server_->port());
  const std::string first = client.request("GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THAT(first, HasSubstr("Connection: keep-alive\r\n"));
  const std::string second = client.request("GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_THAT(second, HasSubstr("GET /b 0"));
  EXPECT_EQ(handled_.load(), 2);
}

TEST_F(HttpServerTest, ClosesWhenTheClientAsks) {
  RawClient client(server_->port());
  EXPECT_THAT(client.request("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
              HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(client.closed_by_server());
}

TEST_F(HttpServerTest, PassesTheBody) {
  RawClient client(server_->port());
  EXPECT_THAT(client.request("POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
              HasSubstr("POST /mcp 5"));
  EXPECT_THAT(client.request("POST /mcp HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
              HasSubstr("POST /mcp 5"));
}

TEST_F(HttpServerTest, RefusesADeclaredBodyOverTheLimitWith413) {
  RawClient client(server_->port());
  const std::string response =
      client.request("POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\nxx");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 413 "));
  EXPECT_THAT(response, HasSubstr("Connection: close\r\n"));
  EXPECT_EQ(handled_.load(), 0);
  EXPECT_THAT(get("/after"), StartsWith("HTTP/1.1 200 OK"));
}

TEST_F(HttpServerTest, RefusesAChunkedBodyOverTheLimitWith413) {
  RawClient client(server_->port());
  std::string chunked = "POST /mcp HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 8; ++i) chunked += "100\r\n" + std::string(256, 'x') + "\r\n";
  chunked += "0\r\n\r\n";
  EXPECT_THAT(client.request(chunked), StartsWith("HTTP/1.1 413 "));
  EXPECT_EQ(handled_.load(), 0);
  EXPECT_THAT(get("/after"), StartsWith("HTTP/1.1 200 OK"));
}

TEST_F(HttpServerTest, HeadGetsHeadersWithoutBody) {
  RawClient client(server_->port());
  const std::string response =
      client.request("HEAD /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", /*head=*/true);
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(response, HasSubstr("Content-Length: 9\r\n"));  // of "HEAD /x 0"
  EXPECT_EQ(response.substr(response.find("\r\n\r\n") + 4), "");
}

TEST_F(HttpServerTest, MalformedRequestsGet4xxAndTheServerKeepsServing) {
  const std::string garbage[] = {
      "garbage\r\n\r\n",
      std::string("\x00\x01\x02\xff\xfe\r\n\r\n", 9),
      "GET / HTTP/1.1\r\nHost: t\r\nX-Huge: " + std::string(64 * 1024, 'a') + "\r\n\r\n",
      "GET /metrics HTTP/9.9\r\nHost: t\r\n\r\n",
      "POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
  };
  for (const std::string& request : garbage) {
    RawClient client(server_->port());
    const std::string response = client.request(request);
    // 400, 411, 413, 431 or 505 depending on the defect.
    EXPECT_THAT(response, ::testing::MatchesRegex("HTTP/[0-9.]+ (400|411|413|431|505) (.|\r|\n)*"))
        << request.substr(0, 40);
  }
  EXPECT_THAT(get("/still-here"), StartsWith("HTTP/1.1 200 OK"));
}

TEST_F(HttpServerTest, DecodesPercentEscapesAndRefusesEncodedNul) {
  EXPECT_THAT(get("/he%61lth"), HasSubstr("GET /health 0"));
  for (const char* path : {"/health%00.json", "/%00", "/metrics%zz", "/metrics%4"}) {
    EXPECT_THAT(get(path), StartsWith("HTTP/1.1 400 ")) << path;
  }
  EXPECT_EQ(handled_.load(), 1);
}

TEST(DecodeRequestPath, DecodesEscapesAndRejectsNulAndMalformedOnes) {
  std::string path;
  ASSERT_TRUE(decode_request_path("/a%2Fb%20c", path));
  EXPECT_EQ(path, "/a/b c");
  ASSERT_TRUE(decode_request_path("/%2e%2e/metrics", path));
  EXPECT_EQ(path, "/../metrics");
  ASSERT_TRUE(decode_request_path("/plain+path", path));
  EXPECT_EQ(path, "/plain+path");
  EXPECT_FALSE(decode_request_path("/health%00", path));
  EXPECT_FALSE(decode_request_path("/x%0", path));
  EXPECT_FALSE(decode_request_path("/x%g1", path));
  EXPECT_FALSE(decode_request_path("%", path));
}

TEST_F(HttpServerTest, AnotherServerOnTheSamePortFailsWithTheReason) {
  HttpServer::Options options;
  options.address = ListenAddress::parse("127.0.0.1:" + std::to_string(server_->port()));
  try {
    HttpServer second(options, [](const HttpRequest&) { return HttpResponse{}; });
    FAIL() << "a second server bound the same port";
  } catch (const std::runtime_error& error) {
    EXPECT_THAT(error.what(), HasSubstr(std::to_string(server_->port())));
  }
}

TEST_F(HttpServerTest, StopIsIdempotent) {
  server_->stop();
  server_->stop();
}

TEST_F(HttpServerTest, RefusesMoreThan64HeaderFieldsWith431) {
  std::string fields;
  for (int i = 0; i < 62; ++i) fields += "X-Field-" + std::to_string(i) + ": v\r\n";
  // Host, 62 fields and Connection: 64 in all.
  EXPECT_THAT(
      RawClient(server_->port())
          .request("GET /ok HTTP/1.1\r\nHost: t\r\n" + fields + "Connection: close\r\n\r\n"),
      StartsWith("HTTP/1.1 200 OK"));
  const std::string response = RawClient(server_->port())
                                   .request("GET /no HTTP/1.1\r\nHost: t\r\n" + fields +
                                            "X-One-More: v\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 431 "));
  EXPECT_THAT(response, HasSubstr("too many header fields: 65 (at most 64)"));
  EXPECT_EQ(handled_.load(), 1);
}

TEST_F(HttpServerTest, AnHttp2PrefaceGets400AndOtherVersions505) {
  EXPECT_THAT(RawClient(server_->port()).request("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
              StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(RawClient(server_->port()).request("GET / HTTP/7.0\r\nHost: t\r\n\r\n"),
              StartsWith("HTTP/1.1 505 "));
  EXPECT_EQ(handled_.load(), 0);
}

TEST_F(HttpServerTest, RefusesTwoContentLengthsWith400) {
  const std::string response = RawClient(server_->port())
                                   .request(
                                       "POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                                       "Content-Length: 40\r\n\r\n{}");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 400 "));
  EXPECT_EQ(handled_.load(), 0);
}

HttpServer::Options loopback_options() {
  HttpServer::Options options;
  options.address = ListenAddress::parse("127.0.0.1:0");
  return options;
}

HttpResponse ok(const HttpRequest&) {
  HttpResponse response;
  response.body = "ok";
  return response;
}

TEST(HttpServer, ClosesAClientThatDoesNotFinishItsHeadersInTime) {
  HttpServer::Options options = loopback_options();
  options.header_timeout = std::chrono::milliseconds(200);
  HttpServer server(options, ok);
  RawClient silent(server.port());
  RawClient slow(server.port());
  slow.send_all("GET / HTTP/1.1\r\nHo");
  EXPECT_TRUE(silent.closed_by_server());
  EXPECT_TRUE(slow.closed_by_server());
  EXPECT_THAT(RawClient(server.port()).request("GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
              StartsWith("HTTP/1.1 200 OK"));
}

TEST(HttpServer, ClosesAnIdleKeptAliveConnection) {
  HttpServer::Options options = loopback_options();
  options.keep_alive_timeout = std::chrono::milliseconds(200);
  HttpServer server(options, ok);
  RawClient client(server.port());
  EXPECT_THAT(client.request("GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
              HasSubstr("Connection: keep-alive"));
  EXPECT_TRUE(client.closed_by_server());
}

TEST(HttpServer, AtTheConnectionLimitClosesTheOldestIdleConnectionToServeANewOne) {
  HttpServer::Options options = loopback_options();
  options.max_connections = 3;
  HttpServer server(options, ok);
  RawClient oldest(server.port());
  RawClient second(server.port());
  RawClient third(server.port());
  // Each connection above is accepted before the next request is read.
  EXPECT_THAT(
      RawClient(server.port()).request("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
      StartsWith("HTTP/1.1 200 OK"));
  EXPECT_TRUE(oldest.closed_by_server());
}

TEST(HttpServer, ListensOnSeveralAddressesIncludingIpv6) {
  const int probe = socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 loopback{};
  loopback.sin6_family = AF_INET6;
  loopback.sin6_addr = in6addr_loopback;
  const bool has_ipv6 =
      probe >= 0 && bind(probe, reinterpret_cast<sockaddr*>(&loopback), sizeof loopback) == 0;
  if (probe >= 0) close(probe);
  if (!has_ipv6) GTEST_SKIP() << "no IPv6 loopback";

  HttpServer::Options options;
  options.addresses = {ListenAddress::parse("127.0.0.1:0"), ListenAddress::parse("[::1]:0")};
  HttpServer server(options, ok);
  const std::vector<ListenAddress> listening = server.listening();
  ASSERT_EQ(listening.size(), 2u);
  EXPECT_EQ(listening[0].port, server.port());
  EXPECT_EQ(listening[1].host, "::1");
  EXPECT_THAT(RawClient(listening[0].port).request("GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
              StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(
      RawClient(listening[1].port, /*ipv6=*/true).request("GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
      StartsWith("HTTP/1.1 200 OK"));
}

TEST(HttpServer, StopLetsARequestInProgressFinishWithConnectionClose) {
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  HttpServer server(loopback_options(), [&](const HttpRequest&) {
    entered = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return ok(HttpRequest{});
  });
  RawClient busy(server.port());
  RawClient idle(server.port());
  busy.send_all("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  while (!entered) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::thread stopper([&] { server.stop(); });
  EXPECT_TRUE(idle.closed_by_server());
  release = true;
  const std::string response = busy.read_response();
  stopper.join();
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(response, HasSubstr("Connection: close"));
  EXPECT_TRUE(busy.closed_by_server());
}

}  // namespace
}  // namespace poolscope::exporter
