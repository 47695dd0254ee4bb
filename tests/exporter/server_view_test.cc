// The exporter's server view and the pool's application_name against the
// real PostgreSQL started by scripts/test.

#include "server_view.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <pqxx/pqxx>
#include <thread>
#include <vector>

#include "cluster.h"
#include "fakes.h"
#include "poolscope/connection.h"
#include "poolscope/pool.h"

namespace poolscope::exporter {
namespace {

using namespace std::chrono_literals;
using poolscope::testing::eventually;
using poolscope::testing::shared_database_url;

std::string admin_value(const std::string& sql) {
  pqxx::connection connection(shared_database_url());
  pqxx::nontransaction tx(connection);
  return tx.exec(sql)[0][0].c_str();
}

std::size_t sessions_named(const std::string& application_name) {
  return std::stoul(admin_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" +
                                application_name + "'"));
}

PoolConfig pool_config(const std::string& application_name) {
  PoolConfig config;
  config.database_url = shared_database_url();
  config.name = "view";
  config.application_name = application_name;
  config.min_size = 3;
  config.max_size = 5;
  return config;
}

ServerView::Options view_options(const std::string& application_name, std::size_t max_size = 5) {
  ServerView::Options options;
  options.database_url = shared_database_url();
  options.application_name = application_name;
  options.pool_name = "view";
  options.pool_max_size = max_size;
  return options;
}

// Speaks PostgreSQL's protocol as far as "ready for query" (trust
// authentication), then never answers again, like a server stopped with
// SIGSTOP: what only a client-side deadline can end. One connection.
class SilentServer {
 public:
  SilentServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_, 1) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("SilentServer: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~SilentServer() {
    ::shutdown(listener_, SHUT_RDWR);  // wakes accept() if no client came
    thread_.join();
    ::close(listener_);
  }

  int port() const { return port_; }
  /// True once the client sent something after "ready for query".
  bool saw_query() const { return saw_query_.load(); }

 private:
  void serve() {
    const int client = ::accept(listener_, nullptr, nullptr);
    if (client < 0) return;
    // SSLRequest and GSSENCRequest are declined with 'N'; then the startup packet.
    for (;;) {
      std::uint32_t length = 0;
      std::uint32_t code = 0;
      if (!read_exactly(client, &length, 4) || !read_exactly(client, &code, 4)) break;
      std::string rest(ntohl(length) - 8, '\0');
      if (!read_exactly(client, rest.data(), rest.size())) break;
      if (ntohl(code) == 80877103 || ntohl(code) == 80877104) {
        ::send(client, "N", 1, MSG_NOSIGNAL);
        continue;
      }
      std::string reply;
      message(reply, 'R', std::string("\0\0\0\0", 4));  // AuthenticationOk
      message(reply, 'S',
              std::string("server_version\0"
                          "15.0\0",
                          20));
      message(reply, 'S',
              std::string("client_encoding\0"
                          "UTF8\0",
                          21));
      message(reply, 'K', std::string(8, '\1'));  // BackendKeyData
      message(reply, 'Z', "I");                   // ReadyForQuery, idle
      ::send(client, reply.data(), reply.size(), MSG_NOSIGNAL);
      char byte = 0;
      if (::recv(client, &byte, 1, 0) == 1) saw_query_ = true;
      // Swallow everything until the client gives up and closes.
      while (::recv(client, &byte, 1, 0) > 0) {
      }
      break;
    }
    ::close(client);
  }

  static bool read_exactly(int socket, void* into, std::size_t size) {
    auto* at = static_cast<char*>(into);
    while (size > 0) {
      const ssize_t got = ::recv(socket, at, size, 0);
      if (got <= 0) return false;
      at += got;
      size -= static_cast<std::size_t>(got);
    }
    return true;
  }

  static void message(std::string& into, char type, const std::string& body) {
    const std::uint32_t length = htonl(static_cast<std::uint32_t>(body.size() + 4));
    into += type;
    into.append(reinterpret_cast<const char*>(&length), 4);
    into += body;
  }

  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> saw_query_{false};
  std::thread thread_;
};

std::string serialize(const ServerView& view) {
  return prometheus::TextSerializer().Serialize(view.collect());
}

TEST(ApplicationName, EveryPoolConnectionCarriesTheConfiguredName) {
  Pool pool(pool_config("sv_every_connection"));
  ASSERT_TRUE(pool.wait_until_ready());
  EXPECT_TRUE(eventually([] { return sessions_named("sv_every_connection") == 3; }))
      << sessions_named("sv_every_connection");
  auto connection = pool.acquire();
  pqxx::nontransaction tx(*connection);
  EXPECT_EQ(tx.exec("SHOW application_name")[0][0].as<std::string>(), "sv_every_connection");
}

TEST(ApplicationName, ConfiguredNameWinsOverTheUrlsAndTheUrlsOverTheDefault) {
  PoolConfig config;
  const std::string url = shared_database_url();
  config.database_url =
      url + (url.find('?') == std::string::npos ? "?" : "&") + "application_name=from_url";
  EXPECT_EQ(application_name_of(config), "from_url");
  config.application_name = "from_config";
  EXPECT_EQ(application_name_of(config), "from_config");
  config = PoolConfig{};
  config.database_url = "host=localhost dbname=app";
  EXPECT_EQ(application_name_of(config), "poolscope");
}

TEST(ServerView, CountsThePoolsSessionsByStateAndTheOldestTransaction) {
  Pool pool(pool_config("sv_states"));
  ASSERT_TRUE(pool.wait_until_ready());
  ServerView view(view_options("sv_states"), /*start_thread=*/false);

  // One connection idle in a transaction, one running a query, the rest idle.
  auto in_transaction = pool.acquire();
  pqxx::work transaction(*in_transaction);
  transaction.exec("SELECT 1");
  std::thread busy([&pool] {
    auto connection = pool.acquire();
    pqxx::nontransaction tx(*connection);
    tx.exec("SELECT pg_sleep(3)");
  });
  std::optional<ServerReading> reading;
  EXPECT_TRUE(eventually([&] {
    if (!view.read_once()) return false;
    reading = view.last_reading();
    return reading && reading->active == 1;
  }));
  busy.join();
  ASSERT_TRUE(reading);
  EXPECT_EQ(reading->active, 1u);
  EXPECT_EQ(reading->idle_in_transaction, 1u);
  EXPECT_EQ(reading->idle, pool.get_statistics().total_connections - 2);
  EXPECT_EQ(reading->other, 0u);
  EXPECT_GT(reading->oldest_transaction_age_seconds, 0.0);
  EXPECT_EQ(view.error_count(), 0u);

  transaction.commit();
  ASSERT_TRUE(view.read_once());
  reading = view.last_reading();
  EXPECT_EQ(reading->idle_in_transaction, 0u);
  EXPECT_EQ(reading->active, 0u);
  EXPECT_EQ(reading->oldest_transaction_age_seconds, 0.0);
  // The view's own connection is never one of the pool's sessions.
  EXPECT_EQ(reading->idle, pool.get_statistics().total_connections);
}

TEST(ServerView, ReportsTheServersLimitsAndLabelsThemWithTheServer) {
  ServerView view(view_options("sv_limits"), /*start_thread=*/false);
  ASSERT_TRUE(view.read_once());
  const auto reading = view.last_reading();
  ASSERT_TRUE(reading);
  const auto max_connections = std::stoul(admin_value("SHOW max_connections"));
  const auto reserved = std::stoul(admin_value("SHOW superuser_reserved_connections"));
  EXPECT_EQ(reading->max_connections, max_connections);
  EXPECT_EQ(reading->reserved_connections, reserved);
  EXPECT_EQ(reading->available_connections(), max_connections - reserved);
  const std::string port = admin_value("SHOW port");
  const std::string server = "127.0.0.1:" + port + "/" + admin_value("SELECT current_database()");
  EXPECT_EQ(reading->server, server);

  const std::string text = serialize(view);
  const std::string labels = "{pool=\"view\",server=\"" + server + "\"}";
  for (const std::string& expected : std::vector<std::string>{
           "codebase_mcp_pool_server_view_up{pool=\"view\"} 1",
           "codebase_mcp_pool_server_view_errors_total{pool=\"view\"} 0",
           "codebase_mcp_pool_server_sessions{pool=\"view\",server=\"" + server +
               "\",state=\"idle in transaction\"} 0",
           "codebase_mcp_pool_server_max_connections" + labels + " " +
               std::to_string(max_connections),
           "codebase_mcp_pool_server_reserved_connections" + labels + " " +
               std::to_string(reserved),
           "codebase_mcp_pool_server_available_connections" + labels + " " +
               std::to_string(max_connections - reserved),
           "codebase_mcp_pool_server_pool_max_connections" + labels + " 5",
           "codebase_mcp_pool_server_oldest_transaction_age_seconds" + labels + " 0"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << "missing: " << expected << "\n" << text;
  }
}

TEST(ServerView, WarnsOnceWhenThePoolsMaximumAloneExceedsTheAvailableSlots) {
  const auto max_connections = std::stoul(admin_value("SHOW max_connections"));
  ::testing::internal::CaptureStderr();
  {
    ServerView fits(view_options("sv_warn", 5), /*start_thread=*/false);
    ASSERT_TRUE(fits.read_once());
  }
  const std::string quiet = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(quiet.find("exceeds the database server's available connection slots"),
            std::string::npos)
      << quiet;

  ::testing::internal::CaptureStderr();
  {
    ServerView too_big(view_options("sv_warn", max_connections + 1), /*start_thread=*/false);
    ASSERT_TRUE(too_big.read_once());
    ASSERT_TRUE(too_big.read_once());
  }
  const std::string warned = ::testing::internal::GetCapturedStderr();
  const auto first = warned.find("exceeds the database server's available connection slots");
  ASSERT_NE(first, std::string::npos) << warned;
  EXPECT_EQ(warned.find("exceeds the database server's available connection slots", first + 1),
            std::string::npos)
      << "warned more than once:\n"
      << warned;
  EXPECT_NE(warned.find(std::to_string(max_connections + 1)), std::string::npos) << warned;
}

TEST(ServerView, AFailedReadIsCountedAndDropsTheSessionSeries) {
  ServerView::Options options = view_options("sv_unreachable");
  // Port 1 on loopback: privileged and unused, so the connection is refused.
  options.database_url = "host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=2";
  ::testing::internal::CaptureStderr();
  ServerView view(options, /*start_thread=*/false);
  EXPECT_FALSE(view.read_once());
  EXPECT_FALSE(view.read_once());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("Server view read failed"), std::string::npos) << log;
  EXPECT_EQ(view.error_count(), 2u);
  EXPECT_FALSE(view.last_reading());
  const std::string text = serialize(view);
  EXPECT_NE(text.find("codebase_mcp_pool_server_view_up{pool=\"view\"} 0"), std::string::npos)
      << text;
  EXPECT_NE(text.find("codebase_mcp_pool_server_view_errors_total{pool=\"view\"} 2"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("server_sessions"), std::string::npos) << text;
  EXPECT_EQ(text.find("server_pool_max_connections"), std::string::npos) << text;
}

TEST(ServerView, AWrongPasswordIsCountedAndNeverLogged) {
  ServerView::Options options = view_options("sv_wrong_password");
  ASSERT_TRUE(options.database_url.has("password"));
  const std::string wrong = "pw-not-the-right-one-4711";
  options.database_url = options.database_url.with("password", wrong);
  ::testing::internal::CaptureStderr();
  ServerView view(options, /*start_thread=*/false);
  EXPECT_FALSE(view.read_once());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("Server view read failed"), std::string::npos) << log;
  EXPECT_EQ(log.find(wrong), std::string::npos) << log;
  EXPECT_EQ(view.error_count(), 1u);
}

TEST(ServerView, AServerThatStopsAnsweringEndsTheReadAtTheClientSideDeadline) {
  SilentServer server;
  ServerView::Options options = view_options("sv_silent");
  options.database_url =
      "host=127.0.0.1 port=" + std::to_string(server.port()) + " dbname=silent user=silent";
  options.statement_timeout = 10ms;  // the deadline is this plus one second
  ::testing::internal::CaptureStderr();
  ServerView view(options, /*start_thread=*/false);
  EXPECT_FALSE(view.read_once());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(server.saw_query());
  EXPECT_NE(log.find("no answer within 1010 ms"), std::string::npos) << log;
  EXPECT_EQ(view.error_count(), 1u);
  EXPECT_FALSE(view.last_reading());
}

TEST(ServerView, TheBackgroundThreadReadsAtOnceAndStopsPromptly) {
  ServerView::Options options = view_options("sv_thread");
  options.interval = 1h;
  ServerView view(options);
  EXPECT_TRUE(eventually([&] { return view.last_reading().has_value(); }));
  // Destruction wakes the thread out of its hour-long pause.
}

}  // namespace
}  // namespace poolscope::exporter
