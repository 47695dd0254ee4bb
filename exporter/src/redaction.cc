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

void scrub_secret(std::string& text, std::string_view secret) {
  if (secret.empty()) return;
  constexpr std::string_view kMask = "***";
  for (std::size_t at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + kMask.size())) {
    text.replace(at, secret.size(), kMask);
  }
}

}  // namespace poolscope::exporter
