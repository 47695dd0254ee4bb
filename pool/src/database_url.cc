#include "poolscope/database_url.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <initializer_list>
#include <memory>
#include <stdexcept>

#include "poolscope/error.h"

namespace poolscope {
namespace {

constexpr const char* kNotShown = "(not shown: it may contain a password)";

using ConninfoOptions = std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)>;

// Every keyword libpq knows, and the ones its display character '*' marks as
// secret. Parsing "" lists them all with no values set.
struct Keywords {
  std::vector<std::string> all;
  std::vector<std::string> secret;
};

const Keywords& keywords() {
  static const Keywords known = [] {
    Keywords result;
    char* error = nullptr;
    ConninfoOptions options(PQconninfoParse("", &error), PQconninfoFree);
    if (error != nullptr) PQfreemem(error);
    if (!options) throw std::bad_alloc();
    for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
      result.all.emplace_back(option->keyword);
      if (option->dispchar != nullptr && option->dispchar[0] == '*') {
        result.secret.emplace_back(option->keyword);
      }
    }
    return result;
  }();
  return known;
}

bool contains(const std::vector<std::string>& list, std::string_view keyword) {
  return std::find(list.begin(), list.end(), keyword) != list.end();
}

// libpq's message quotes the offending fragment, which may be part of a
// password: only the text before the first quote is kept.
std::string reason_without_quotes(std::string reason) {
  if (const auto quote = reason.find('"'); quote != std::string::npos) reason.resize(quote);
  while (!reason.empty() &&
         (reason.back() == '\n' || reason.back() == ' ' || reason.back() == ':')) {
    reason.pop_back();
  }
  return reason.empty() ? "syntax error" : reason;
}

bool is_port_list(std::string_view ports) {
  // One port per host ("5432,5433"); an empty entry means the default port.
  while (true) {
    const std::size_t comma = ports.find(',');
    const std::string_view port = ports.substr(0, comma);
    if (!port.empty()) {
      int number = 0;
      const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), number);
      if (error != std::errc() || end != port.data() + port.size() || number < 1 ||
          number > 65535) {
        return false;
      }
    }
    if (comma == std::string_view::npos) return true;
    ports.remove_prefix(comma + 1);
  }
}

bool is_integer(std::string_view text) {
  long long number = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  return error == std::errc() && end == text.data() + text.size();
}

bool is_one_of(std::string_view value, std::initializer_list<std::string_view> accepted) {
  return std::find(accepted.begin(), accepted.end(), value) != accepted.end();
}

// libpq checks these values only when it connects; a string no connection
// can ever be made with is rejected at start instead of leaving a pool
// retrying forever. Values are never shown: a URI missing its '@' turns the
// password into the "port", for example.
void check_value(std::string_view keyword, std::string_view value, const std::string& source) {
  auto reject = [&](std::string_view accepted) {
    return ConfigError(source, kNotShown, fmt::format("its {} is not {}", keyword, accepted));
  };
  if (keyword == "port" && !is_port_list(value)) {
    throw reject("a port number from 1 to 65535 (one per host, comma-separated)");
  }
  if (is_one_of(keyword, {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout"}) &&
      !is_integer(value)) {
    throw reject("a whole number");
  }
  if (keyword == "sslmode" &&
      !is_one_of(value, {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})) {
    throw reject("one of disable, allow, prefer, require, verify-ca, verify-full");
  }
  if (keyword == "target_session_attrs" &&
      !is_one_of(value,
                 {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"})) {
    throw reject("one of any, read-write, read-only, primary, standby, prefer-standby");
  }
  if ((keyword == "gssencmode" || keyword == "channel_binding") &&
      !is_one_of(value, {"disable", "prefer", "require"})) {
    throw reject("one of disable, prefer, require");
  }
}

std::string quote_value(std::string_view value) {
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

}  // namespace

DatabaseUrl::DatabaseUrl(const std::string& text) : DatabaseUrl(parse(text)) {}

DatabaseUrl::DatabaseUrl(const char* text) : DatabaseUrl(parse(text)) {}

DatabaseUrl DatabaseUrl::parse(std::string_view text, const std::string& source) {
  DatabaseUrl url;
  if (text.empty()) return url;
  char* error = nullptr;
  ConninfoOptions options(PQconninfoParse(std::string(text).c_str(), &error), PQconninfoFree);
  if (!options) {
    const std::string reason = error != nullptr ? error : "out of memory";
    if (error != nullptr) PQfreemem(error);
    throw ConfigError(source, kNotShown,
                      fmt::format("libpq cannot parse it ({}); expected a URI such as "
                                  "postgresql://user:password@host:5432/dbname or a key=value "
                                  "string such as 'host=localhost dbname=app'",
                                  reason_without_quotes(reason)));
  }
  url.given_ = true;
  for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr || *option->val == '\0') continue;
    check_value(option->keyword, option->val, source);
    url.settings_.push_back(Setting{option->keyword, option->val});
  }
  return url;
}

bool DatabaseUrl::has(std::string_view keyword) const noexcept {
  return std::any_of(settings_.begin(), settings_.end(),
                     [&](const Setting& setting) { return setting.keyword == keyword; });
}

std::optional<std::string> DatabaseUrl::value(std::string_view keyword) const {
  if (is_secret_keyword(keyword)) {
    throw std::invalid_argument(fmt::format(
        "DatabaseUrl::value: {} is secret; only connection_string_with_secrets() holds it",
        keyword));
  }
  for (const Setting& setting : settings_) {
    if (setting.keyword == keyword) return setting.value;
  }
  return std::nullopt;
}

DatabaseUrl DatabaseUrl::with(std::string_view keyword, std::string value) const {
  if (!contains(keywords().all, keyword)) {
    throw std::invalid_argument(
        fmt::format("DatabaseUrl::with: libpq knows no connection keyword '{}'", keyword));
  }
  check_value(keyword, value, "DATABASE_URL");
  DatabaseUrl copy = *this;
  copy.given_ = true;
  for (Setting& setting : copy.settings_) {
    if (setting.keyword == keyword) {
      setting.value = std::move(value);
      return copy;
    }
  }
  // Settings stay in libpq's keyword order, as parse() leaves them, so that
  // equal settings compare equal however they were built.
  const auto position = [](std::string_view name) {
    const auto& all = keywords().all;
    return std::find(all.begin(), all.end(), name) - all.begin();
  };
  const auto after = std::find_if(
      copy.settings_.begin(), copy.settings_.end(),
      [&](const Setting& setting) { return position(setting.keyword) > position(keyword); });
  copy.settings_.insert(after, Setting{std::string(keyword), std::move(value)});
  return copy;
}

DatabaseUrl DatabaseUrl::with_server_setting(std::string_view setting,
                                             std::string_view setting_value) const {
  const bool plain_name =
      !setting.empty() && std::all_of(setting.begin(), setting.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
      });
  if (!plain_name) {
    throw std::invalid_argument(
        fmt::format("DatabaseUrl::with_server_setting: '{}' is not a setting name", setting));
  }
  std::string options = value("options").value_or("");
  options += fmt::format("{}-c {}=", options.empty() ? "" : " ", setting);
  for (const char c : setting_value) {
    if (c == ' ' || c == '\\') options += '\\';
    options += c;
  }
  return with("options", std::move(options));
}

DatabaseUrl DatabaseUrl::without(std::string_view keyword) const {
  DatabaseUrl copy = *this;
  std::erase_if(copy.settings_, [&](const Setting& setting) { return setting.keyword == keyword; });
  return copy;
}

std::string DatabaseUrl::connection_string_with_secrets() const {
  std::string text;
  for (const Setting& setting : settings_) {
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", setting.keyword,
                        quote_value(setting.value));
  }
  return text;
}

std::string DatabaseUrl::redacted() const {
  std::string text;
  for (const Setting& setting : settings_) {
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", setting.keyword,
                        is_secret_keyword(setting.keyword) ? "***" : setting.value);
  }
  return text;
}

std::vector<std::string_view> DatabaseUrl::secret_values() const {
  std::vector<std::string_view> secrets;
  for (const Setting& setting : settings_) {
    if (is_secret_keyword(setting.keyword)) secrets.emplace_back(setting.value);
  }
  return secrets;
}

std::string DatabaseUrl::scrubbed(std::string text) const {
  constexpr std::string_view kMask = "***";
  for (const std::string_view secret : secret_values()) {
    for (std::size_t at = text.find(secret); at != std::string::npos;
         at = text.find(secret, at + kMask.size())) {
      text.replace(at, secret.size(), kMask);
    }
  }
  return text;
}

void DatabaseUrl::mask_secrets(std::span<char> text) const {
  // Every occurrence is found in the original text before any is masked, so
  // overlapping occurrences are all covered.
  const std::string original(text.data(), text.size());
  for (const std::string_view secret : secret_values()) {
    for (std::size_t at = original.find(secret); at != std::string::npos;
         at = original.find(secret, at + 1)) {
      std::fill_n(text.begin() + static_cast<std::ptrdiff_t>(at), secret.size(), '*');
    }
  }
}

std::int64_t DatabaseUrl::connect_timeout_seconds(std::chrono::milliseconds timeout) {
  const std::int64_t seconds = (timeout.count() + 999) / 1000;
  return std::max<std::int64_t>(2, seconds);
}

bool DatabaseUrl::is_secret_keyword(std::string_view keyword) {
  return contains(keywords().secret, keyword);
}

}  // namespace poolscope
