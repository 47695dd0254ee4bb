#include "redaction.h"

#include <string_view>

#include "poolscope/database_url.h"

namespace poolscope::exporter {
namespace {

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
    if (equals != std::string_view::npos &&
        DatabaseUrl::is_secret_keyword(pair.substr(0, equals))) {
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
    if (DatabaseUrl::is_secret_keyword(key)) mask(text, value_start, at);
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

}  // namespace poolscope::exporter
