#include "web_config.h"

#include <fmt/format.h>
#include <yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>

#include "exporter_error.h"
#include "poolscope/error.h"
#include "poolscope/pool_config.h"

namespace poolscope::exporter {
namespace {

constexpr std::array<std::string_view, 4> kTopLevelKeys = {
    "tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"};
constexpr std::array<std::string_view, 13> kTlsKeys = {"cert",
                                                       "key",
                                                       "client_ca",
                                                       "cert_file",
                                                       "key_file",
                                                       "client_auth_type",
                                                       "client_ca_file",
                                                       "cipher_suites",
                                                       "curve_preferences",
                                                       "min_version",
                                                       "max_version",
                                                       "prefer_server_cipher_suites",
                                                       "client_allowed_sans"};
constexpr std::array<std::string_view, 2> kHttpKeys = {"http2", "headers"};
constexpr std::array<std::string_view, 2> kRateLimitKeys = {"interval", "burst"};
constexpr std::array<std::string_view, 6> kClientAuthTypes = {
    "NoClientCert",      "RequestClientCert",       "RequireAnyClientCert",
    "RequireClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"};
constexpr std::array<std::string_view, 4> kTlsVersions = {"TLS10", "TLS11", "TLS12", "TLS13"};
constexpr std::array<std::string_view, 4> kCurves = {"CurveP256", "CurveP384", "CurveP521",
                                                     "X25519"};
// The toolkit lets only these headers be set, some with fixed values.
struct HeaderRule {
  std::string_view name;
  std::vector<std::string_view> allowed_values;  // empty: any value
};
const std::array<HeaderRule, 5> kHeaderRules = {{
    {"Strict-Transport-Security", {}},
    {"X-Content-Type-Options", {"nosniff"}},
    {"X-Frame-Options", {"deny", "sameorigin"}},
    {"X-XSS-Protection", {}},
    {"Content-Security-Policy", {}},
}};

template <std::size_t N>
std::string join(const std::array<std::string_view, N>& values) {
  return fmt::format("{}", fmt::join(values, ", "));
}

template <std::size_t N>
bool contains(const std::array<std::string_view, N>& values, std::string_view value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

// Walks a libyaml document and turns mistakes into UsageErrors that name the
// file, the line and the key.
class Reader {
 public:
  Reader(const std::string& source, yaml_document_t* document)
      : source_(source), document_(document) {}

  [[noreturn]] void fail(const yaml_node_t* node, std::string_view message) const {
    if (node != nullptr) {
      throw UsageError(fmt::format("invalid --web.config.file {}: line {}: {}", source_,
                                   node->start_mark.line + 1, message));
    }
    throw UsageError(fmt::format("invalid --web.config.file {}: {}", source_, message));
  }

  yaml_node_t* node(int index) const { return yaml_document_get_node(document_, index); }

  static bool is_null(const yaml_node_t* node) {
    if (node == nullptr) return true;
    if (node->type != YAML_SCALAR_NODE) return false;
    if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const std::string_view value = scalar_text(node);
    return value.empty() || value == "~" || value == "null" || value == "Null" || value == "NULL";
  }

  static std::string_view scalar_text(const yaml_node_t* node) {
    return {reinterpret_cast<const char*>(node->data.scalar.value), node->data.scalar.length};
  }

  static std::string_view kind(const yaml_node_t* node) {
    switch (node->type) {
      case YAML_SCALAR_NODE:
        return "a scalar";
      case YAML_SEQUENCE_NODE:
        return "a list";
      case YAML_MAPPING_NODE:
        return "a mapping";
      default:
        return "nothing";
    }
  }

  std::string string_value(const yaml_node_t* value, std::string_view key) const {
    if (is_null(value)) return {};
    if (value->type != YAML_SCALAR_NODE) {
      fail(value, fmt::format("{} must be a string, not {}", key, kind(value)));
    }
    return std::string(scalar_text(value));
  }

  bool bool_value(const yaml_node_t* value, std::string_view key, bool fallback) const {
    if (is_null(value)) return fallback;
    if (value->type == YAML_SCALAR_NODE) {
      // YAML 1.1 booleans, as the toolkit's YAML library reads them.
      static constexpr std::array<std::string_view, 12> kTrue = {
          "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y", "1"};
      static constexpr std::array<std::string_view, 12> kFalse = {
          "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N", "0"};
      const std::string_view text = scalar_text(value);
      if (contains(kTrue, text)) return true;
      if (contains(kFalse, text)) return false;
    }
    fail(value, fmt::format("{} must be true or false, got '{}'", key,
                            value->type == YAML_SCALAR_NODE ? scalar_text(value) : kind(value)));
  }

  long long int_value(const yaml_node_t* value, std::string_view key) const {
    if (is_null(value)) return 0;
    if (value->type == YAML_SCALAR_NODE) {
      const std::string_view text = scalar_text(value);
      long long result = 0;
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), result);
      if (error == std::errc() && end == text.data() + text.size()) return result;
    }
    fail(value, fmt::format("{} must be an integer, got '{}'", key,
                            value->type == YAML_SCALAR_NODE ? scalar_text(value) : kind(value)));
  }

  std::vector<std::string> string_list(const yaml_node_t* value, std::string_view key) const {
    std::vector<std::string> result;
    if (is_null(value)) return result;
    if (value->type != YAML_SEQUENCE_NODE) {
      fail(value, fmt::format("{} must be a list of strings, not {}", key, kind(value)));
    }
    for (yaml_node_item_t* item = value->data.sequence.items.start;
         item < value->data.sequence.items.top; ++item) {
      result.push_back(string_value(node(*item), key));
    }
    return result;
  }

  // Calls visit(key, key_node, value_node) for every entry of a mapping;
  // duplicate keys and keys outside `allowed` (when given) are errors.
  template <typename Visit>
  void for_each_entry(const yaml_node_t* mapping, std::string_view where,
                      const std::vector<std::string_view>* allowed, const std::string& accepted,
                      Visit&& visit) const {
    if (is_null(mapping)) return;
    if (mapping->type != YAML_MAPPING_NODE) {
      fail(mapping, fmt::format("{} must be a mapping, not {}", where, kind(mapping)));
    }
    std::set<std::string, std::less<>> seen;
    for (yaml_node_pair_t* pair = mapping->data.mapping.pairs.start;
         pair < mapping->data.mapping.pairs.top; ++pair) {
      const yaml_node_t* key_node = node(pair->key);
      const yaml_node_t* value_node = node(pair->value);
      if (key_node == nullptr || key_node->type != YAML_SCALAR_NODE) {
        fail(key_node, fmt::format("keys of {} must be strings", where));
      }
      const std::string key(scalar_text(key_node));
      if (allowed != nullptr &&
          std::find(allowed->begin(), allowed->end(), key) == allowed->end()) {
        fail(key_node, fmt::format("unknown key '{}' in {} (accepted: {})", key, where, accepted));
      }
      if (!seen.insert(key).second) {
        fail(key_node, fmt::format("duplicate key '{}' in {}", key, where));
      }
      visit(key, key_node, value_node);
    }
  }

 private:
  const std::string& source_;
  yaml_document_t* document_;
};

template <std::size_t N>
std::vector<std::string_view> to_vector(const std::array<std::string_view, N>& values) {
  return {values.begin(), values.end()};
}

// Go's TLS 1.2 cipher suite names (the toolkit's cipher_suites) to OpenSSL's.
std::string openssl_cipher(std::string_view go_name) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 14> kCiphers = {{
      {"TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"},
      {"TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"},
      {"TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"},
      {"TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"},
      {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"},
      {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"},
      {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"},
      {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"},
      {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
      {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
      {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
      {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
      {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
      {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
  }};
  for (const auto& [go, openssl] : kCiphers) {
    if (go == go_name) return std::string(openssl);
  }
  return {};
}

void read_tls(const Reader& reader, const yaml_node_t* section, WebConfig& config) {
  const auto allowed = to_vector(kTlsKeys);
  std::map<std::string, std::string> strings;
  std::vector<std::string> sans;
  bool sans_given = false;
  const yaml_node_t* auth_node = section;
  reader.for_each_entry(
      section, "tls_server_config", &allowed, join(kTlsKeys),
      [&](const std::string& key, const yaml_node_t* key_node, const yaml_node_t* value) {
        if (key == "cipher_suites") {
          config.tls.cipher_suites = reader.string_list(value, key);
          for (const std::string& suite : config.tls.cipher_suites) {
            if (openssl_cipher(suite).empty()) {
              reader.fail(value, fmt::format("unknown cipher suite '{}' in cipher_suites "
                                             "(accepted: Go's TLS 1.2 names such as "
                                             "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                                             suite));
            }
          }
        } else if (key == "curve_preferences") {
          config.tls.curve_preferences = reader.string_list(value, key);
          for (const std::string& curve : config.tls.curve_preferences) {
            if (!contains(kCurves, curve)) {
              reader.fail(value,
                          fmt::format("unknown curve '{}' in curve_preferences (accepted: {})",
                                      curve, join(kCurves)));
            }
          }
        } else if (key == "client_allowed_sans") {
          sans = reader.string_list(value, key);
          sans_given = !Reader::is_null(value);
          config.tls.client_allowed_sans = sans;
        } else if (key == "prefer_server_cipher_suites") {
          config.tls.prefer_server_cipher_suites = reader.bool_value(value, key, true);
        } else {
          strings[key] = reader.string_value(value, key);
          if (key == "client_auth_type") auth_node = key_node;
          if ((key == "min_version" || key == "max_version") && !strings[key].empty() &&
              !contains(kTlsVersions, strings[key])) {
            reader.fail(value, fmt::format("unknown TLS version '{}' in {} (accepted: {})",
                                           strings[key], key, join(kTlsVersions)));
          }
        }
      });
  auto get = [&](const char* key) {
    const auto found = strings.find(key);
    return found == strings.end() ? std::string() : found->second;
  };
  config.tls.cert_file = get("cert_file");
  config.tls.key_file = get("key_file");
  config.tls.client_ca_file = get("client_ca_file");
  config.tls.cert = get("cert");
  config.tls.key = get("key");
  config.tls.client_ca = get("client_ca");
  config.tls.client_auth_type = get("client_auth_type");
  config.tls.min_version = get("min_version");
  config.tls.max_version = get("max_version");
  config.tls_enabled = !get("cert_file").empty() || !get("cert").empty() ||
                       !get("key_file").empty() || !get("key").empty() ||
                       !get("client_ca_file").empty() || !get("client_ca").empty() ||
                       !get("client_auth_type").empty();
  if (!config.tls_enabled) return;
  if (get("cert_file").empty() && get("cert").empty()) {
    reader.fail(section, "tls_server_config: missing one of cert or cert_file");
  }
  if (get("key_file").empty() && get("key").empty()) {
    reader.fail(section, "tls_server_config: missing one of key or key_file");
  }
  const std::string auth = get("client_auth_type");
  if (!auth.empty() && !contains(kClientAuthTypes, auth)) {
    reader.fail(auth_node, fmt::format("invalid client_auth_type '{}' (accepted: {})", auth,
                                       join(kClientAuthTypes)));
  }
  const bool no_client_cert = auth.empty() || auth == "NoClientCert";
  if ((!get("client_ca_file").empty() || !get("client_ca").empty()) && no_client_cert) {
    reader.fail(section,
                "tls_server_config: client CA's have been configured without a "
                "client_auth_type");
  }
  if (sans_given && auth != "RequireAnyClientCert" && auth != "RequireClientCert" &&
      auth != "RequireAndVerifyClientCert") {
    reader.fail(section,
                "tls_server_config: client_allowed_sans requires client_auth_type "
                "RequireAnyClientCert or RequireAndVerifyClientCert");
  }
}

void read_http(const Reader& reader, const yaml_node_t* section, WebConfig& config) {
  const auto allowed = to_vector(kHttpKeys);
  reader.for_each_entry(
      section, "http_server_config", &allowed, "http2, headers",
      [&](const std::string& key, const yaml_node_t*, const yaml_node_t* value) {
        if (key == "http2") {
          reader.bool_value(value, key, true);
          return;
        }
        std::vector<std::string_view> header_names;
        header_names.reserve(kHeaderRules.size());
        for (const HeaderRule& rule : kHeaderRules) header_names.push_back(rule.name);
        const std::string accepted = fmt::format("{}", fmt::join(header_names, ", "));
        reader.for_each_entry(
            value, "http_server_config.headers", &header_names, accepted,
            [&](const std::string& name, const yaml_node_t*, const yaml_node_t* header_value) {
              const std::string text = reader.string_value(header_value, name);
              for (const HeaderRule& rule : kHeaderRules) {
                if (rule.name != name || rule.allowed_values.empty()) continue;
                if (std::find(rule.allowed_values.begin(), rule.allowed_values.end(), text) ==
                    rule.allowed_values.end()) {
                  reader.fail(header_value,
                              fmt::format("invalid value '{}' for header {} (accepted: {})", text,
                                          name, fmt::join(rule.allowed_values, ", ")));
                }
              }
              if (text.find_first_of("\r\n") != std::string::npos) {
                reader.fail(header_value, fmt::format("header {} must be one line", name));
              }
              if (!text.empty()) config.response_headers.emplace_back(name, text);
            });
      });
}

void read_users(const Reader& reader, const yaml_node_t* section, WebConfig& config) {
  reader.for_each_entry(
      section, "basic_auth_users", nullptr, "",
      [&](const std::string& user, const yaml_node_t*, const yaml_node_t* value) {
        const std::string hash = reader.string_value(value, "basic_auth_users." + user);
        if (!is_bcrypt_hash(hash)) {
          // Never echo the value: a plain-text password pasted here by
          // mistake must not end up in logs.
          reader.fail(value, fmt::format("basic_auth_users.{} is not a bcrypt hash (accepted: "
                                         "$2a$, $2b$ or $2y$ with cost 04-31 and 53 hash "
                                         "characters, e.g. from 'htpasswd -nBC 10 \"\"')",
                                         user));
        }
        config.basic_auth_users.emplace(user, hash);
      });
}

void read_rate_limit(const Reader& reader, const yaml_node_t* section, WebConfig& config) {
  const auto allowed = to_vector(kRateLimitKeys);
  reader.for_each_entry(section, "rate_limit", &allowed, join(kRateLimitKeys),
                        [&](const std::string& key, const yaml_node_t*, const yaml_node_t* value) {
                          if (key == "burst") {
                            config.rate_limit_burst = reader.int_value(value, key);
                            if (config.rate_limit_burst < 0) {
                              reader.fail(value, "rate_limit.burst must not be negative");
                            }
                            return;
                          }
                          const std::string text = reader.string_value(value, key);
                          if (text.empty()) return;
                          try {
                            config.rate_limit_interval =
                                parse_duration(text, "rate_limit.interval");
                          } catch (const Error& error) {
                            reader.fail(value, error.what());
                          }
                        });
}

struct ParserDeleter {
  void operator()(yaml_parser_t* parser) const {
    yaml_parser_delete(parser);
    delete parser;
  }
};
struct DocumentDeleter {
  void operator()(yaml_document_t* document) const {
    yaml_document_delete(document);
    delete document;
  }
};

}  // namespace

bool is_bcrypt_hash(std::string_view hash) noexcept {
  constexpr std::string_view kAlphabet =
      "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  if (hash.size() != 60) return false;
  const std::string_view prefix = hash.substr(0, 4);
  if (prefix != "$2a$" && prefix != "$2b$" && prefix != "$2y$") return false;
  if (hash[4] < '0' || hash[4] > '9' || hash[5] < '0' || hash[5] > '9' || hash[6] != '$') {
    return false;
  }
  const int cost = (hash[4] - '0') * 10 + (hash[5] - '0');
  if (cost < 4 || cost > 31) return false;
  return hash.substr(7).find_first_not_of(kAlphabet) == std::string_view::npos;
}

WebConfig WebConfig::load_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw UsageError(fmt::format("invalid --web.config.file {}: cannot read it: {}", path,
                                 std::generic_category().message(errno)));
  }
  std::ostringstream content;
  content << file.rdbuf();
  WebConfig config = parse(content.str(), path);
  // Like the toolkit, file names are relative to the configuration file.
  const std::filesystem::path directory = std::filesystem::path(path).parent_path();
  for (std::string* file :
       {&config.tls.cert_file, &config.tls.key_file, &config.tls.client_ca_file}) {
    if (!file->empty() && std::filesystem::path(*file).is_relative()) {
      *file = (directory / *file).string();
    }
  }
  return config;
}

namespace {

int tls_version_number(const std::string& name, int otherwise) {
  if (name == "TLS10") return 0x0301;
  if (name == "TLS11") return 0x0302;
  if (name == "TLS12") return 0x0303;
  if (name == "TLS13") return 0x0304;
  return otherwise;
}

std::string read_pem(const std::string& file, const std::string& inline_pem, const char* key) {
  if (file.empty()) return inline_pem;
  std::ifstream input(file, std::ios::binary);
  if (!input) {
    throw UsageError(fmt::format("--web.config.file: tls_server_config.{}: cannot read {}: {}", key,
                                 file, std::generic_category().message(errno)));
  }
  std::ostringstream content;
  content << input.rdbuf();
  return content.str();
}

}  // namespace

TlsServerSettings WebConfig::tls_server_settings() const {
  if (!tls.client_allowed_sans.empty()) {
    throw UsageError(
        "--web.config.file: tls_server_config.client_allowed_sans is not supported by this "
        "exporter; remove it (client certificates are still verified against client_ca_file)");
  }
  TlsServerSettings settings;
  settings.certificate_pem = read_pem(tls.cert_file, tls.cert, "cert_file");
  settings.private_key_pem = read_pem(tls.key_file, tls.key, "key_file");
  settings.client_ca_pem = read_pem(tls.client_ca_file, tls.client_ca, "client_ca_file");
  using ClientAuth = TlsServerSettings::ClientAuth;
  const std::string& auth = tls.client_auth_type;
  settings.client_auth = auth == "RequestClientCert" ? ClientAuth::kRequestClientCert
                         : auth == "RequireAnyClientCert" || auth == "RequireClientCert"
                             ? ClientAuth::kRequireAnyClientCert
                         : auth == "VerifyClientCertIfGiven" ? ClientAuth::kVerifyClientCertIfGiven
                         : auth == "RequireAndVerifyClientCert"
                             ? ClientAuth::kRequireAndVerifyClientCert
                             : ClientAuth::kNoClientCert;
  // The toolkit's defaults: at least TLS 1.2, up to TLS 1.3.
  settings.min_version = tls_version_number(tls.min_version, 0x0303);
  settings.max_version = tls_version_number(tls.max_version, 0x0304);
  if (settings.min_version > settings.max_version) {
    throw UsageError(
        fmt::format("--web.config.file: tls_server_config: min_version {} is above max_version {}",
                    tls.min_version, tls.max_version));
  }
  for (const std::string& suite : tls.cipher_suites) {
    if (!settings.cipher_list.empty()) settings.cipher_list += ':';
    settings.cipher_list += openssl_cipher(suite);
  }
  for (const std::string& curve : tls.curve_preferences) {
    if (!settings.groups.empty()) settings.groups += ':';
    settings.groups += curve == "CurveP256"   ? "P-256"
                       : curve == "CurveP384" ? "P-384"
                       : curve == "CurveP521" ? "P-521"
                                              : "X25519";
  }
  settings.prefer_server_cipher_suites = tls.prefer_server_cipher_suites;
  return settings;
}

WebConfig WebConfig::parse(std::string_view yaml, const std::string& source) {
  std::unique_ptr<yaml_parser_t, ParserDeleter> parser(new yaml_parser_t);
  if (yaml_parser_initialize(parser.get()) == 0) {
    delete parser.release();
    throw UsageError("cannot initialise the YAML parser");
  }
  yaml_parser_set_input_string(parser.get(), reinterpret_cast<const unsigned char*>(yaml.data()),
                               yaml.size());
  std::unique_ptr<yaml_document_t, DocumentDeleter> document(new yaml_document_t);
  if (yaml_parser_load(parser.get(), document.get()) == 0) {
    delete document.release();
    throw UsageError(fmt::format("invalid --web.config.file {}: line {}: YAML syntax error: {}",
                                 source, parser->problem_mark.line + 1,
                                 parser->problem != nullptr ? parser->problem : "unknown"));
  }
  Reader reader(source, document.get());
  WebConfig config;
  const yaml_node_t* root = yaml_document_get_root_node(document.get());
  if (Reader::is_null(root)) return config;  // an empty file configures nothing
  const auto allowed = to_vector(kTopLevelKeys);
  reader.for_each_entry(root, "the file", &allowed, join(kTopLevelKeys),
                        [&](const std::string& key, const yaml_node_t*, const yaml_node_t* value) {
                          if (key == "tls_server_config") {
                            read_tls(reader, value, config);
                          } else if (key == "http_server_config") {
                            read_http(reader, value, config);
                          } else if (key == "basic_auth_users") {
                            read_users(reader, value, config);
                          } else {
                            read_rate_limit(reader, value, config);
                          }
                        });
  return config;
}

}  // namespace poolscope::exporter
