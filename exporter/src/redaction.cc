#include "redaction.h"

#include <libpq-fe.h>

#include <cstring>

namespace poolscope::exporter {

std::string database_password(const std::string& database_url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(database_url.c_str(), &error);
  if (error != nullptr) PQfreemem(error);
  if (options == nullptr) return {};
  std::string password;
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (std::strcmp(option->keyword, "password") == 0 && option->val != nullptr) {
      password = option->val;
    }
  }
  PQconninfoFree(options);
  return password;
}

std::vector<std::string> database_secrets(const std::string& database_url) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(database_url.c_str(), &error);
  if (error != nullptr) PQfreemem(error);
  if (options == nullptr) return {};
  std::vector<std::string> secrets;
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    // libpq's display character '*' marks the options to hide (password,
    // sslpassword).
    const bool secret = option->dispchar != nullptr && option->dispchar[0] == '*';
    if (secret && option->val != nullptr && *option->val != '\0') secrets.emplace_back(option->val);
  }
  PQconninfoFree(options);
  return secrets;
}

namespace {

bool is_secret_key(std::string_view key) { return key == "password" || key == "sslpassword"; }

void mask(std::span<char> text, std::size_t from, std::size_t to) {
  for (std::size_t i = from; i < to && i < text.size(); ++i) text[i] = '*';
}

// "key=value&key=value" after a URI's '?'.
void mask_query(std::span<char> text, std::size_t from) {
  const std::string_view all(text.data(), text.size());
  while (from < all.size()) {
    std::size_t end = all.find('&', from);
    if (end == std::string_view::npos) end = all.size();
    const std::string_view pair = all.substr(from, end - from);
    const std::size_t equals = pair.find('=');
    if (equals != std::string_view::npos && is_secret_key(pair.substr(0, equals))) {
      mask(text, from + equals + 1, end);
    }
    from = end + 1;
  }
}

void mask_uri(std::span<char> text, std::size_t authority) {
  const std::string_view all(text.data(), text.size());
  // libpq ends the user info at the first '@' that comes before any '/'.
  std::size_t after_user_info = authority;
  const std::size_t stop = all.find_first_of("@/", authority);
  if (stop != std::string_view::npos && all[stop] == '@') {
    const std::size_t colon = all.find(':', authority);
    if (colon != std::string_view::npos && colon < stop) mask(text, colon + 1, stop);
    after_user_info = stop + 1;
  }
  const std::size_t query = all.find('?', after_user_info);
  if (query != std::string_view::npos) mask_query(text, query + 1);
}

void mask_key_value(std::span<char> text) {
  const std::string_view all(text.data(), text.size());
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  std::size_t at = 0;
  while (at < all.size()) {
    while (at < all.size() && is_space(all[at])) ++at;
    const std::size_t key_start = at;
    while (at < all.size() && all[at] != '=' && !is_space(all[at])) ++at;
    const std::string_view key = all.substr(key_start, at - key_start);
    while (at < all.size() && is_space(all[at])) ++at;
    if (at >= all.size() || all[at] != '=') {
      if (at == key_start) ++at;
      continue;
    }
    ++at;
    while (at < all.size() && is_space(all[at])) ++at;
    const std::size_t value_start = at;
    if (at < all.size() && all[at] == '\'') {
      for (++at; at < all.size() && all[at] != '\''; ++at) {
        if (all[at] == '\\') ++at;
      }
      if (at < all.size()) ++at;  // closing quote
    } else {
      for (; at < all.size() && !is_space(all[at]); ++at) {
        if (all[at] == '\\') ++at;
      }
    }
    if (is_secret_key(key)) mask(text, value_start, at);
  }
}

}  // namespace

void mask_connection_secrets(std::span<char> text) {
  const std::string_view all(text.data(), text.size());
  for (const std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (all.starts_with(scheme)) {
      mask_uri(text, scheme.size());
      return;
    }
  }
  mask_key_value(text);
}

void scrub_secret(std::string& text, std::string_view secret) {
  if (secret.empty()) return;
  constexpr std::string_view kMask = "***";
  for (std::size_t at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + kMask.size())) {
    text.replace(at, secret.size(), kMask);
  }
}

}  // namespace poolscope::exporter
