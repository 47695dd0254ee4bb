#include "mcp_server.h"

#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace poolscope::exporter {
namespace {

using nlohmann::json;

constexpr std::string_view kClientAccept = "application/json, text/event-stream";

json health_document() {
  return {{"status", "healthy"},
          {"timestamp", "2025-10-13T14:30:00.000Z"},
          {"database",
           {{"status", "connected"},
            {"pool", {{"total", 5}, {"idle", 4}, {"active", 1}, {"waiting", 0}}},
            {"latency_ms", 2.3},
            {"last_error", nullptr}}},
          {"uptime_seconds", 3600.5}};
}

json statistics_document() {
  return {{"pool_name", "default"},
          {"total_connections", 5},
          {"idle_connections", 4},
          {"active_connections", 1},
          {"total_acquisitions", 42}};
}

// Checks the JSON-RPC response envelope: exactly jsonrpc, id and one of
// result/error, nothing else (the official client rejects extra keys).
void expect_envelope(const json& message) {
  ASSERT_TRUE(message.is_object()) << message;
  EXPECT_EQ(message.value("jsonrpc", ""), "2.0");
  ASSERT_TRUE(message.contains("id")) << message;
  const bool has_result = message.contains("result");
  const bool has_error = message.contains("error");
  EXPECT_NE(has_result, has_error) << message;
  EXPECT_EQ(message.size(), 3u) << message;
  if (has_error) {
    const json& error = message["error"];
    ASSERT_TRUE(error.is_object());
    EXPECT_TRUE(error["code"].is_number_integer());
    EXPECT_TRUE(error["message"].is_string());
  }
}

class McpServerTest : public ::testing::Test {
 protected:
  McpServer make_server() {
    return McpServer({.health =
                          [this] {
                            ++health_calls_;
                            return health_document();
                          },
                      .statistics =
                          [this] {
                            ++statistics_calls_;
                            return statistics_document();
                          }},
                     "poolscope-exporter", "1.2.3");
  }

  HttpResponse post(std::string_view body, std::string_view accept = kClientAccept) {
    return server_.handle("POST", accept, body);
  }

  // POSTs a message and returns the parsed JSON-RPC answer, checking the
  // transport details every answer shares.
  json call(const json& message) {
    const HttpResponse response = post(message.dump());
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.content_type, "application/json");
    json answer = json::parse(response.body);
    expect_envelope(answer);
    return answer;
  }

  json call_raw(std::string_view body) {
    const HttpResponse response = post(body);
    EXPECT_EQ(response.status, 200) << body;
    EXPECT_EQ(response.content_type, "application/json");
    json answer = json::parse(response.body);
    expect_envelope(answer);
    return answer;
  }

  static json request(const json& id, std::string_view method, json params = nullptr) {
    json message = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
    if (!params.is_null()) message["params"] = std::move(params);
    return message;
  }

  static json initialize_params(std::string_view version) {
    return {{"protocolVersion", version},
            {"capabilities", json::object()},
            {"clientInfo", {{"name", "test"}, {"version", "0"}}}};
  }

  static int error_code(const json& answer) { return answer.at("error").at("code").get<int>(); }

  std::atomic<int> health_calls_{0};
  std::atomic<int> statistics_calls_{0};
  McpServer server_ = make_server();
};

// ---- initialize -----------------------------------------------------------

TEST_F(McpServerTest, InitializeAnswersTheClientsVersionWhenSupported) {
  for (const std::string_view version : {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}) {
    const json answer = call(request(1, "initialize", initialize_params(version)));
    EXPECT_EQ(answer["result"]["protocolVersion"], version);
  }
}

TEST_F(McpServerTest, InitializeAnswersTheLatestVersionForAnUnknownOne) {
  for (const std::string_view version : {"1.0.0", "2099-01-01", ""}) {
    const json answer = call(request(1, "initialize", initialize_params(version)));
    EXPECT_EQ(answer["result"]["protocolVersion"], "2025-11-25");
  }
}

TEST_F(McpServerTest, InitializeReportsServerInfoAndTheResourcesCapability) {
  const json answer = call(request("init-1", "initialize", initialize_params("2025-11-25")));
  EXPECT_EQ(answer["id"], "init-1");
  const json& result = answer["result"];
  EXPECT_EQ(result["serverInfo"], json({{"name", "poolscope-exporter"}, {"version", "1.2.3"}}));
  EXPECT_EQ(result["capabilities"], json({{"resources", json::object()}}));
  EXPECT_TRUE(result["instructions"].is_string());
}

TEST_F(McpServerTest, InitializeWithoutAStringProtocolVersionIsInvalidParams) {
  EXPECT_EQ(error_code(call(request(1, "initialize"))), -32602);
  EXPECT_EQ(error_code(call(request(1, "initialize", json::object()))), -32602);
  EXPECT_EQ(error_code(call(request(1, "initialize", {{"protocolVersion", 20251125}}))), -32602);
  EXPECT_EQ(error_code(call(request(1, "initialize", {{"protocolVersion", nullptr}}))), -32602);
}

TEST_F(McpServerTest, InitializeWithNonObjectCapabilitiesOrClientInfoIsInvalidParams) {
  json params = initialize_params("2025-11-25");
  params["capabilities"] = "all";
  EXPECT_EQ(error_code(call(request(1, "initialize", params))), -32602);
  params = initialize_params("2025-11-25");
  params["clientInfo"] = json::array();
  EXPECT_EQ(error_code(call(request(1, "initialize", params))), -32602);
}

TEST_F(McpServerTest, SupportedProtocolVersionsAreListedNewestFirst) {
  const auto versions = McpServer::supported_protocol_versions();
  ASSERT_EQ(versions.size(), 4u);
  EXPECT_EQ(versions.front(), "2025-11-25");
  EXPECT_TRUE(McpServer::is_supported_protocol_version("2025-03-26"));
  EXPECT_FALSE(McpServer::is_supported_protocol_version("2025-03-27"));
}

// ---- notifications and client responses -------------------------------------

TEST_F(McpServerTest, InitializedNotificationIsAcceptedWithAnEmptyBody) {
  const HttpResponse response = post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})");
  EXPECT_EQ(response.status, 202);
  EXPECT_TRUE(response.body.empty());
  EXPECT_TRUE(response.content_type.empty());
}

TEST_F(McpServerTest, AnyNotificationIsAcceptedEvenAnUnknownOne) {
  for (const char* body : {
           R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}})",
           R"({"jsonrpc":"2.0","method":"no/such/notification"})",
           R"({"jsonrpc":"2.0","method":"resources/read","params":{"uri":"nope://x"}})",
       }) {
    const HttpResponse response = post(body);
    EXPECT_EQ(response.status, 202) << body;
    EXPECT_TRUE(response.body.empty()) << body;
  }
  EXPECT_EQ(health_calls_, 0);
}

TEST_F(McpServerTest, ClientResponsesAreAcceptedWithAnEmptyBody) {
  for (const char* body : {R"({"jsonrpc":"2.0","id":7,"result":{}})",
                           R"({"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}})"}) {
    const HttpResponse response = post(body);
    EXPECT_EQ(response.status, 202) << body;
    EXPECT_TRUE(response.body.empty());
  }
}

TEST_F(McpServerTest, ANotificationWithScalarParamsIsAnInvalidRequest) {
  const json answer =
      call_raw(R"({"jsonrpc":"2.0","method":"notifications/initialized","params":3})");
  EXPECT_EQ(error_code(answer), -32600);
  EXPECT_TRUE(answer["id"].is_null());
}

// ---- ping and unknown methods ----------------------------------------------

TEST_F(McpServerTest, PingAnswersAnEmptyObject) {
  const json answer = call(request(5, "ping"));
  EXPECT_EQ(answer["id"], 5);
  EXPECT_EQ(answer["result"], json::object());
}

TEST_F(McpServerTest, UnknownMethodIsMethodNotFound) {
  for (const std::string_view method :
       {"tools/list", "prompts/list", "resources/subscribe", "notifications/initialized", ""}) {
    const json answer = call(request(9, method));
    EXPECT_EQ(error_code(answer), -32601) << method;
    EXPECT_EQ(answer["id"], 9);
  }
}

// ---- resources --------------------------------------------------------------

TEST_F(McpServerTest, ResourcesListNamesTheHealthAndStatisticsResources) {
  const json answer = call(request(2, "resources/list"));
  const json& resources = answer["result"]["resources"];
  ASSERT_EQ(resources.size(), 2u);
  std::set<std::string> uris;
  for (const json& resource : resources) {
    uris.insert(resource.at("uri").get<std::string>());
    EXPECT_TRUE(resource.at("name").is_string());
    EXPECT_TRUE(resource.at("title").is_string());
    EXPECT_TRUE(resource.at("description").is_string());
    EXPECT_EQ(resource.at("mimeType"), "application/json");
  }
  EXPECT_EQ(uris, (std::set<std::string>{"health://connection-pool", "stats://connection-pool"}));
  EXPECT_FALSE(answer["result"].contains("nextCursor"));
}

TEST_F(McpServerTest, ResourcesListReadsNoDocument) {
  call(request(2, "resources/list"));
  EXPECT_EQ(health_calls_, 0);
  EXPECT_EQ(statistics_calls_, 0);
}

TEST_F(McpServerTest, ResourcesListWithACursorWeNeverIssuedIsInvalidParams) {
  EXPECT_EQ(error_code(call(request(2, "resources/list", {{"cursor", "page-2"}}))), -32602);
}

TEST_F(McpServerTest, ResourceTemplatesListIsEmpty) {
  const json answer = call(request(2, "resources/templates/list"));
  EXPECT_EQ(answer["result"], json({{"resourceTemplates", json::array()}}));
}

TEST_F(McpServerTest, ReadingHealthReturnsTheHealthDocumentAsJsonText) {
  const json answer = call(request(3, "resources/read", {{"uri", "health://connection-pool"}}));
  const json& contents = answer["result"]["contents"];
  ASSERT_EQ(contents.size(), 1u);
  EXPECT_EQ(contents[0]["uri"], "health://connection-pool");
  EXPECT_EQ(contents[0]["mimeType"], "application/json");
  EXPECT_EQ(json::parse(contents[0]["text"].get<std::string>()), health_document());
  EXPECT_EQ(contents[0].size(), 3u);
}

TEST_F(McpServerTest, ReadingStatisticsReturnsTheStatisticsDocument) {
  const json answer = call(request(3, "resources/read", {{"uri", "stats://connection-pool"}}));
  const json& contents = answer["result"]["contents"];
  ASSERT_EQ(contents.size(), 1u);
  EXPECT_EQ(contents[0]["uri"], "stats://connection-pool");
  EXPECT_EQ(json::parse(contents[0]["text"].get<std::string>()), statistics_document());
}

TEST_F(McpServerTest, EveryReadTakesAFreshDocument) {
  for (int i = 0; i < 3; ++i)
    call(request(i, "resources/read", {{"uri", "health://connection-pool"}}));
  EXPECT_EQ(health_calls_, 3);
  EXPECT_EQ(statistics_calls_, 0);
}

TEST_F(McpServerTest, ReadingAnUnknownResourceIsResourceNotFoundWithItsUri) {
  for (const std::string_view uri :
       {"health://other-pool", "HEALTH://connection-pool", "", "file:///etc/passwd"}) {
    const json answer = call(request(4, "resources/read", {{"uri", uri}}));
    EXPECT_EQ(error_code(answer), -32002) << uri;
    EXPECT_EQ(answer["error"]["data"], json({{"uri", uri}}));
    EXPECT_EQ(answer["id"], 4);
  }
}

TEST_F(McpServerTest, ReadingWithoutAStringUriIsInvalidParams) {
  EXPECT_EQ(error_code(call(request(4, "resources/read"))), -32602);
  EXPECT_EQ(error_code(call(request(4, "resources/read", json::object()))), -32602);
  EXPECT_EQ(error_code(call(request(4, "resources/read", {{"uri", 17}}))), -32602);
  EXPECT_EQ(error_code(call(request(4, "resources/read", {{"uri", {{"a", 1}}}}))), -32602);
}

TEST_F(McpServerTest, AFailingDocumentCallbackIsAnInternalErrorThatHidesItsMessage) {
  McpServer server({.health = []() -> json { throw std::runtime_error("password=hunter2"); },
                    .statistics = [] { return statistics_document(); }},
                   "n", "v");
  const HttpResponse response =
      server.handle("POST", kClientAccept,
                    request(1, "resources/read", {{"uri", "health://connection-pool"}}).dump());
  EXPECT_EQ(response.status, 200);
  const json answer = json::parse(response.body);
  expect_envelope(answer);
  EXPECT_EQ(error_code(answer), -32603);
  EXPECT_EQ(response.body.find("hunter2"), std::string::npos);
}

TEST_F(McpServerTest, InvalidUtf8InADocumentIsReplacedNotThrown) {
  McpServer server({.health =
                        [] {
                          return json{{"last_error", std::string("bad \xff\xfe byte")}};
                        },
                    .statistics = [] { return statistics_document(); }},
                   "n", "v");
  const HttpResponse response =
      server.handle("POST", kClientAccept,
                    request(1, "resources/read", {{"uri", "health://connection-pool"}}).dump());
  const json answer = json::parse(response.body);
  expect_envelope(answer);
  ASSERT_TRUE(answer.contains("result"));
  const json document = json::parse(answer["result"]["contents"][0]["text"].get<std::string>());
  EXPECT_TRUE(document["last_error"].is_string());
}

TEST(McpServerConstruction, RejectsAnEmptyCallback) {
  EXPECT_THROW(
      McpServer({.health = nullptr, .statistics = [] { return json::object(); }}, "n", "v"),
      std::invalid_argument);
  EXPECT_THROW(
      McpServer({.health = [] { return json::object(); }, .statistics = nullptr}, "n", "v"),
      std::invalid_argument);
}

// ---- ids ------------------------------------------------------------------

TEST_F(McpServerTest, StringAndIntegerIdsAreEchoedUnchanged) {
  for (const json& id : {json(0), json(-1), json(std::uint64_t{18446744073709551615u}), json("abc"),
                         json(""), json(std::string(1000, 'x'))}) {
    EXPECT_EQ(call(request(id, "ping"))["id"], id);
  }
}

TEST_F(McpServerTest, ANullOrNonScalarIdIsAnInvalidRequestWithNullId) {
  for (const char* id :
       {"null", "1.5", "true", "[1]", "{\"a\":1}", "1e400", "123456789012345678901234567890"}) {
    const std::string body = std::string(R"({"jsonrpc":"2.0","method":"ping","id":)") + id + "}";
    const HttpResponse response = post(body);
    ASSERT_EQ(response.status, 200) << body;
    const json answer = json::parse(response.body);
    expect_envelope(answer);
    // 1e400 overflows a double: nlohmann refuses it as a parse error.
    EXPECT_TRUE(error_code(answer) == -32600 || error_code(answer) == -32700) << body;
    EXPECT_TRUE(answer["id"].is_null()) << body;
  }
}

TEST_F(McpServerTest, ErrorsAfterAValidIdEchoTheId) {
  const json answer = call_raw(R"({"jsonrpc":"1.0","id":12,"method":"ping"})");
  EXPECT_EQ(error_code(answer), -32600);
  EXPECT_EQ(answer["id"], 12);
}

// ---- malformed messages -------------------------------------------------------

TEST_F(McpServerTest, MalformedJsonIsAParseErrorWithNullId) {
  for (const char* body :
       {"", " ", "{", R"({"jsonrpc":"2.0","id":1,"method":"ping")", "nul", "{'jsonrpc':'2.0'}",
        "{\"a\":1,}", "[1,2", "\"unterminated", "{\"jsonrpc\":\"2.0\"} trailing", "\xff\xfe\x00"}) {
    const json answer = call_raw(body);
    EXPECT_EQ(error_code(answer), -32700) << body;
    EXPECT_TRUE(answer["id"].is_null());
  }
}

TEST_F(McpServerTest, InvalidUtf8InAStringIsAParseError) {
  const std::string body = "{\"jsonrpc\":\"2.0\",\"id\":\"\xc3\x28\",\"method\":\"ping\"}";
  EXPECT_EQ(error_code(call_raw(body)), -32700);
}

TEST_F(McpServerTest, ABatchIsAnInvalidRequest) {
  for (const char* body : {"[]", R"([{"jsonrpc":"2.0","id":1,"method":"ping"}])",
                           R"([{"jsonrpc":"2.0","method":"notifications/initialized"}])"}) {
    const json answer = call_raw(body);
    EXPECT_EQ(error_code(answer), -32600) << body;
    EXPECT_TRUE(answer["id"].is_null());
  }
}

TEST_F(McpServerTest, AMessageThatIsNotAnObjectIsAnInvalidRequest) {
  for (const char* body : {"1", "\"ping\"", "null", "true", "-0.5"}) {
    EXPECT_EQ(error_code(call_raw(body)), -32600) << body;
  }
}

TEST_F(McpServerTest, AWrongOrMissingJsonrpcMemberIsAnInvalidRequest) {
  for (const char* body :
       {R"({"id":1,"method":"ping"})", R"({"jsonrpc":"1.0","id":1,"method":"ping"})",
        R"({"jsonrpc":2.0,"id":1,"method":"ping"})",
        R"({"jsonrpc":null,"id":1,"method":"ping"})"}) {
    EXPECT_EQ(error_code(call_raw(body)), -32600) << body;
  }
}

TEST_F(McpServerTest, AMissingOrNonStringMethodIsAnInvalidRequest) {
  for (const char* body : {R"({"jsonrpc":"2.0","id":1})", R"({"jsonrpc":"2.0","id":1,"method":5})",
                           R"({"jsonrpc":"2.0","id":1,"method":null})",
                           R"({"jsonrpc":"2.0","id":1,"method":["ping"]})",
                           R"({"jsonrpc":"2.0","method":{}})", R"({})"}) {
    EXPECT_EQ(error_code(call_raw(body)), -32600) << body;
  }
}

TEST_F(McpServerTest, ArrayParamsAreInvalidParamsAndScalarParamsAnInvalidRequest) {
  EXPECT_EQ(error_code(call(request(1, "ping", json::array({1, 2})))), -32602);
  EXPECT_EQ(
      error_code(call(request(1, "resources/read", json::array({"health://connection-pool"})))),
      -32602);
  for (const char* params : {"null", "1", "\"x\"", "false"}) {
    const std::string body =
        std::string(R"({"jsonrpc":"2.0","id":1,"method":"ping","params":)") + params + "}";
    EXPECT_EQ(error_code(call_raw(body)), -32600) << body;
  }
}

TEST_F(McpServerTest, DeeplyNestedJsonIsRefusedWithoutCrashing) {
  // Refused as soon as the depth limit is passed, before the rest is read.
  const std::string arrays(200000, '[');
  EXPECT_EQ(error_code(call_raw(arrays)), -32600);
  const std::string closed = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(error_code(call_raw(closed)), -32600);
  std::string in_params = R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":)";
  for (int i = 0; i < 50000; ++i) in_params += "{\"a\":";
  in_params += "1";
  for (int i = 0; i < 50000; ++i) in_params += "}";
  in_params += "}}";
  EXPECT_EQ(error_code(call_raw(in_params)), -32600);
}

// A ping whose params carry an array of empty objects, `size` bytes long:
// the shape that made the depth-limit callback quadratic (an array of 170k
// empty objects took 82 s).
std::string ping_with_padding(std::size_t size) {
  std::string body = R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"a":[)";
  while (body.size() + 8 < size) body += "{},";
  return body + "{}]}}}";
}

// CPU time of this thread, so that other processes on a busy machine do not
// count; the best of three runs.
std::chrono::nanoseconds best_cpu_time_to_answer(const McpServer& server, const std::string& body) {
  auto best = std::chrono::nanoseconds::max();
  for (int run = 0; run < 3; ++run) {
    timespec start{};
    timespec end{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    const HttpResponse response = server.handle("POST", "application/json", body);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
    EXPECT_EQ(response.status, 200);
    EXPECT_TRUE(json::parse(response.body).contains("result"));
    best = std::min(best, std::chrono::seconds(end.tv_sec - start.tv_sec) +
                              std::chrono::nanoseconds(end.tv_nsec - start.tv_nsec));
  }
  return best;
}

TEST_F(McpServerTest, TheLargestAcceptedBodyParsesWithin50Milliseconds) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A latency bound holds for the optimised build; instrumented code is
  // several times slower. The linear-growth test below runs everywhere.
  GTEST_SKIP() << "latency bound: checked in the optimised build, not under sanitizers";
#endif
  // 64 KiB is the exporter's /mcp body limit.
  EXPECT_LT(best_cpu_time_to_answer(server_, ping_with_padding(64 * 1024)),
            std::chrono::milliseconds(50));
}

TEST_F(McpServerTest, ParsingTimeGrowsLinearlyWithTheBody) {
  const auto small = best_cpu_time_to_answer(server_, ping_with_padding(64 * 1024));
  const auto large = best_cpu_time_to_answer(server_, ping_with_padding(1024 * 1024));
  // 16 times the body: linear parsing costs about 16 times as much,
  // quadratic parsing 256 times.
  EXPECT_LT(large, small * 40) << "64 KiB: " << small.count() << " ns, 1 MiB: " << large.count()
                               << " ns";
}

TEST_F(McpServerTest, NestingUpToTheLimitIsAcceptedAndOneMoreLevelRefused) {
  // The message object is level 1 and params level 2.
  const auto nested = [](int levels) {
    std::string body = R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":)";
    for (int i = 0; i < levels; ++i) body += "[";
    for (int i = 0; i < levels; ++i) body += "]";
    return body + "}}";
  };
  EXPECT_TRUE(call_raw(nested(62)).contains("result"));
  EXPECT_EQ(error_code(call_raw(nested(63))), -32600);
}

TEST_F(McpServerTest, ModeratelyNestedParamsAreAccepted) {
  json meta = 1;
  for (int i = 0; i < 20; ++i) meta = json{{"k", meta}};
  EXPECT_TRUE(call(request(1, "ping", {{"_meta", meta}})).contains("result"));
}

TEST_F(McpServerTest, HugeNumbersDoNotCrash) {
  for (
      const char* body :
      {R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":1e999999}})",
       R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":-1e-999999}})",
       R"({"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":99999999999999999999999999999999}})",
       R"({"jsonrpc":"2.0","id":-99999999999999999999999,"method":"ping"})"}) {
    const HttpResponse response = post(body);
    EXPECT_EQ(response.status, 200) << body;
    expect_envelope(json::parse(response.body));
  }
}

// ---- HTTP method and Accept header ---------------------------------------------

TEST_F(McpServerTest, MethodsOtherThanPostAreNotAllowed) {
  for (const std::string_view method :
       {"GET", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "post", ""}) {
    const HttpResponse response = server_.handle(method, "text/event-stream", "");
    EXPECT_EQ(response.status, 405) << method;
    ASSERT_EQ(response.headers.size(), 1u);
    EXPECT_EQ(response.headers[0], (std::pair<std::string, std::string>{"Allow", "POST"}));
  }
}

TEST_F(McpServerTest, JsonIsAnsweredToEveryAcceptThatAdmitsIt) {
  for (const std::string_view accept :
       {"application/json, text/event-stream", "application/json", "", "*/*", "application/*",
        "text/event-stream, application/json;q=0.5", "APPLICATION/JSON; charset=utf-8",
        "text/html, */*;q=0.1"}) {
    const HttpResponse response = post(request(1, "ping").dump(), accept);
    EXPECT_EQ(response.status, 200) << accept;
    EXPECT_EQ(response.content_type, "application/json") << accept;
    EXPECT_EQ(json::parse(response.body)["result"], json::object());
  }
}

TEST_F(McpServerTest, AnEventStreamOnlyClientGetsOneSseEvent) {
  const HttpResponse response = post(request(1, "ping").dump(), "text/event-stream");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "text/event-stream");
  const std::string prefix = "event: message\ndata: ";
  ASSERT_EQ(response.body.rfind(prefix, 0), 0u) << response.body;
  ASSERT_TRUE(response.body.ends_with("\n\n"));
  const std::string data =
      response.body.substr(prefix.size(), response.body.size() - prefix.size() - 2);
  EXPECT_EQ(data.find('\n'), std::string::npos);
  EXPECT_EQ(json::parse(data), json({{"jsonrpc", "2.0"}, {"id", 1}, {"result", json::object()}}));
}

TEST_F(McpServerTest, AnAcceptWithoutJsonOrEventStreamIsNotAcceptable) {
  for (const std::string_view accept :
       {"text/html", "application/xml", "application/json;q=0", "image/*, text/plain"}) {
    const HttpResponse response = post(request(1, "ping").dump(), accept);
    EXPECT_EQ(response.status, 406) << accept;
  }
}

// ---- robustness -----------------------------------------------------------------

// Whatever arrives, the answer is 202 with no body or a well-formed JSON-RPC
// response with a known error code, never a crash or an exception.
class FuzzCheck {
 public:
  explicit FuzzCheck(const McpServer& server) : server_(server) {}

  void check(std::string_view body) {
    const HttpResponse response = server_.handle("POST", kClientAccept, body);
    if (response.status == 202) {
      EXPECT_TRUE(response.body.empty());
      return;
    }
    ASSERT_EQ(response.status, 200);
    const json answer = json::parse(response.body, nullptr, false);
    ASSERT_FALSE(answer.is_discarded()) << response.body;
    expect_envelope(answer);
    if (answer.contains("error")) {
      static const std::set<int> kKnownCodes = {-32700, -32600, -32601, -32602, -32603, -32002};
      EXPECT_TRUE(kKnownCodes.contains(answer["error"]["code"].get<int>())) << answer;
    }
  }

 private:
  const McpServer& server_;
};

std::vector<std::string> valid_messages() {
  return {
      R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}})",
      R"({"jsonrpc":"2.0","method":"notifications/initialized"})",
      R"({"jsonrpc":"2.0","id":2,"method":"ping"})",
      R"({"jsonrpc":"2.0","id":3,"method":"resources/list","params":{}})",
      R"({"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":"health://connection-pool"}})",
      R"({"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"stats://connection-pool"}})",
  };
}

TEST_F(McpServerTest, RandomBytesNeverBreakTheServer) {
  FuzzCheck fuzz(server_);
  std::mt19937 random(20251125);
  std::uniform_int_distribution<int> length(0, 64);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 3000; ++i) {
    std::string body(static_cast<std::size_t>(length(random)), '\0');
    for (char& c : body) c = static_cast<char>(byte(random));
    fuzz.check(body);
  }
}

TEST_F(McpServerTest, EveryTruncationOfAValidMessageIsHandled) {
  FuzzCheck fuzz(server_);
  for (const std::string& message : valid_messages()) {
    for (std::size_t length = 0; length <= message.size(); ++length) {
      fuzz.check(std::string_view(message).substr(0, length));
    }
  }
}

TEST_F(McpServerTest, RandomMutationsOfValidMessagesAreHandled) {
  FuzzCheck fuzz(server_);
  const std::vector<std::string> messages = valid_messages();
  const std::string alphabet = "{}[]\",:0123456789.-+eE truefalsnul\\/\x01\xff";
  std::mt19937 random(42);
  for (int i = 0; i < 5000; ++i) {
    std::string body = messages[random() % messages.size()];
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int e = 0; e < edits && !body.empty(); ++e) {
      const std::size_t at = random() % body.size();
      switch (random() % 3) {
        case 0:
          body[at] = alphabet[random() % alphabet.size()];
          break;
        case 1:
          body.erase(at, 1);
          break;
        default:
          body.insert(at, 1, alphabet[random() % alphabet.size()]);
          break;
      }
    }
    fuzz.check(body);
  }
}

TEST_F(McpServerTest, WrongTypesInEveryMemberAreHandled) {
  FuzzCheck fuzz(server_);
  const std::vector<json> values = {nullptr,
                                    true,
                                    0,
                                    -7,
                                    1.25,
                                    "",
                                    "2.0",
                                    "ping",
                                    json::array(),
                                    json::object(),
                                    json::array({1, "a"}),
                                    json{{"uri", "health://connection-pool"}}};
  for (const std::string& text : valid_messages()) {
    const json message = json::parse(text);
    for (const auto& [key, original] : message.items()) {
      for (const json& value : values) {
        json changed = message;
        changed[key] = value;
        fuzz.check(changed.dump());
      }
      json without = message;
      without.erase(key);
      fuzz.check(without.dump());
    }
    if (message.contains("params")) {
      for (const auto& [key, original] : message["params"].items()) {
        for (const json& value : values) {
          json changed = message;
          changed["params"][key] = value;
          fuzz.check(changed.dump());
        }
      }
    }
  }
}

// ---- tools ------------------------------------------------------------------

TEST_F(McpServerTest, WithoutActionsThereAreNoTools) {
  EXPECT_FALSE(server_.has_tools());
  const json init = call(request(1, "initialize", initialize_params("2025-06-18")));
  EXPECT_FALSE(init["result"]["capabilities"].contains("tools"));
  EXPECT_EQ(error_code(call(request(2, "tools/list"))), -32601);
  EXPECT_EQ(error_code(call(request(3, "tools/call", {{"name", "pool_drain"}}))), -32601);
}

class McpToolsTest : public McpServerTest {
 protected:
  McpServer make_tool_server() {
    McpServer::Actions actions;
    actions.resize = [this](std::optional<std::size_t> max_size,
                            std::optional<std::size_t> min_size) -> json {
      if (refuse_) throw McpServer::ActionError("invalid max_size='1': lower min_size first");
      resizes_.emplace_back(max_size, min_size);
      return {{"max_size", max_size.value_or(10)}, {"min_size", min_size.value_or(2)}};
    };
    actions.drain = [this]() -> json {
      if (fail_) throw std::runtime_error("secret internals");
      ++drains_;
      return {{"closed_idle", 3}, {"replaced_later", 1}};
    };
    return McpServer({.health = [] { return health_document(); },
                      .statistics = [] { return statistics_document(); }},
                     "poolscope-exporter", "1.2.3", std::move(actions));
  }

  json call_tool(std::string_view name, json arguments) {
    json params = {{"name", name}};
    if (!arguments.is_null()) params["arguments"] = std::move(arguments);
    const HttpResponse response =
        tools_.handle("POST", kClientAccept, request(7, "tools/call", params).dump());
    EXPECT_EQ(response.status, 200);
    json answer = json::parse(response.body);
    expect_envelope(answer);
    return answer;
  }

  // The text of a tool result that reports an error.
  static std::string refusal(const json& answer) {
    const json& result = answer.at("result");
    EXPECT_EQ(result.at("isError"), true) << answer;
    return result.at("content").at(0).at("text").get<std::string>();
  }

  std::vector<std::pair<std::optional<std::size_t>, std::optional<std::size_t>>> resizes_;
  int drains_ = 0;
  bool refuse_ = false;
  bool fail_ = false;
  McpServer tools_ = make_tool_server();
};

TEST_F(McpToolsTest, InitializeDeclaresTheToolsCapability) {
  const HttpResponse response = tools_.handle(
      "POST", kClientAccept, request(1, "initialize", initialize_params("2025-06-18")).dump());
  const json result = json::parse(response.body)["result"];
  EXPECT_EQ(result["capabilities"]["tools"], json::object());
  EXPECT_NE(result["instructions"].get<std::string>().find("pool_resize"), std::string::npos);
}

TEST_F(McpToolsTest, ToolsListDescribesBothToolsWithStrictSchemas) {
  const HttpResponse response =
      tools_.handle("POST", kClientAccept, request(1, "tools/list").dump());
  const json tools = json::parse(response.body)["result"]["tools"];
  ASSERT_EQ(tools.size(), 2u);
  const json& resize = tools[0];
  EXPECT_EQ(resize["name"], "pool_resize");
  EXPECT_EQ(resize["inputSchema"]["type"], "object");
  EXPECT_EQ(resize["inputSchema"]["additionalProperties"], false);
  EXPECT_EQ(resize["inputSchema"]["properties"]["max_size"]["type"], "integer");
  EXPECT_EQ(resize["inputSchema"]["properties"]["max_size"]["minimum"], 1);
  EXPECT_EQ(resize["inputSchema"]["properties"]["min_size"]["minimum"], 0);
  EXPECT_EQ(resize["inputSchema"]["properties"]["min_size"]["maximum"], 10000);
  EXPECT_EQ(tools[1]["name"], "pool_drain");
  EXPECT_EQ(tools[1]["inputSchema"]["properties"], json::object());
}

TEST_F(McpToolsTest, ResizePassesTheSizesAndReturnsTheResult) {
  const json answer = call_tool("pool_resize", {{"max_size", 20}, {"min_size", 4}});
  const json& result = answer["result"];
  EXPECT_EQ(result["isError"], false);
  EXPECT_EQ(result["structuredContent"], (json{{"max_size", 20}, {"min_size", 4}}));
  EXPECT_EQ(json::parse(result["content"][0]["text"].get<std::string>()),
            result["structuredContent"]);
  ASSERT_EQ(resizes_.size(), 1u);
  EXPECT_EQ(resizes_[0].first, std::optional<std::size_t>(20));
  EXPECT_EQ(resizes_[0].second, std::optional<std::size_t>(4));
  call_tool("pool_resize", {{"max_size", 5}});
  ASSERT_EQ(resizes_.size(), 2u);
  EXPECT_EQ(resizes_[1].second, std::nullopt);
}

TEST_F(McpToolsTest, BadResizeArgumentsAreRefusedWithTheReason) {
  EXPECT_EQ(refusal(call_tool("pool_resize", json::object())),
            "Invalid arguments: pool_resize needs max_size, min_size or both");
  EXPECT_EQ(refusal(call_tool("pool_resize", nullptr)),
            "Invalid arguments: pool_resize needs max_size, min_size or both");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", 0}})),
            "Invalid arguments: max_size must be a whole number from 1 to 10000, got 0");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", 10001}})),
            "Invalid arguments: max_size must be a whole number from 1 to 10000, got 10001");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"min_size", -1}})),
            "Invalid arguments: min_size must be a whole number from 0 to 10000, got -1");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", 2.5}})),
            "Invalid arguments: max_size must be a whole number from 1 to 10000, got 2.5");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", "20"}})),
            "Invalid arguments: max_size must be a whole number from 1 to 10000, got \"20\"");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", 20}, {"size", 3}})),
            "Invalid arguments: unknown argument 'size'; pool_resize takes max_size and min_size");
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", 3}, {"min_size", 4}})),
            "Invalid arguments: min_size (4) must not exceed max_size (3)");
  EXPECT_EQ(refusal(call_tool("pool_resize", json::array({20}))),
            "Invalid arguments: arguments must be an object");
  EXPECT_TRUE(resizes_.empty());  // nothing reached the pool
}

TEST_F(McpToolsTest, ARefusedActionIsAToolErrorWithItsMessage) {
  refuse_ = true;
  EXPECT_EQ(refusal(call_tool("pool_resize", {{"max_size", 1}})),
            "invalid max_size='1': lower min_size first");
}

TEST_F(McpToolsTest, DrainRunsAndTakesNoArguments) {
  const json answer = call_tool("pool_drain", nullptr);
  EXPECT_EQ(answer["result"]["structuredContent"],
            (json{{"closed_idle", 3}, {"replaced_later", 1}}));
  EXPECT_EQ(drains_, 1);
  EXPECT_EQ(refusal(call_tool("pool_drain", {{"force", true}})),
            "Invalid arguments: pool_drain takes no arguments, got 'force'");
  EXPECT_EQ(drains_, 1);
}

TEST_F(McpToolsTest, AnUnexpectedFailureHidesItsMessage) {
  fail_ = true;
  const json answer = call_tool("pool_drain", nullptr);
  EXPECT_EQ(error_code(answer), -32603);
  EXPECT_EQ(answer.dump().find("secret"), std::string::npos);
}

TEST_F(McpToolsTest, AnUnknownToolIsInvalidParams) {
  const json answer = call_tool("pool_shutdown", nullptr);
  EXPECT_EQ(error_code(answer), -32602);
  EXPECT_EQ(answer["error"]["data"]["name"], "pool_shutdown");
  EXPECT_EQ(error_code(call_tool("", nullptr)), -32602);
}

TEST(McpServerConstruction, RejectsOnlyOneAction) {
  McpServer::Actions actions;
  actions.drain = [] { return json::object(); };
  EXPECT_THROW(McpServer({.health = [] { return json::object(); },
                          .statistics = [] { return json::object(); }},
                         "x", "1", actions),
               std::invalid_argument);
}

TEST_F(McpServerTest, ConcurrentRequestsAllGetTheirOwnAnswers) {
  constexpr int kThreads = 4;
  constexpr int kRequestsPerThread = 200;
  std::atomic<int> correct{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &correct] {
      for (int i = 0; i < kRequestsPerThread; ++i) {
        const int id = t * kRequestsPerThread + i;
        const std::string_view uri =
            i % 2 == 0 ? "health://connection-pool" : "stats://connection-pool";
        const HttpResponse response = server_.handle(
            "POST", kClientAccept, request(id, "resources/read", {{"uri", uri}}).dump());
        const json answer = json::parse(response.body, nullptr, false);
        if (!answer.is_discarded() && answer.value("id", -1) == id && answer.contains("result") &&
            answer["result"]["contents"][0]["uri"] == uri) {
          ++correct;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(correct, kThreads * kRequestsPerThread);
  EXPECT_EQ(health_calls_ + statistics_calls_, kThreads * kRequestsPerThread);
}

}  // namespace
}  // namespace poolscope::exporter
