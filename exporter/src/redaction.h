#pragma once

#include <string>
#include <string_view>

namespace poolscope::exporter {

/// The password in `database_url` (libpq URI or key=value string, including a
/// password given as a URI query parameter); "" when there is none or libpq
/// cannot parse the string. Thread-safe.
std::string database_password(const std::string& database_url);

/// Replaces every occurrence of `secret` in `text` with "***". An empty secret
/// changes nothing. Used on texts that come from outside the exporter (server
/// error messages) before they are shown, as a second line of defence behind
/// the pool's own redaction.
void scrub_secret(std::string& text, std::string_view secret);

}  // namespace poolscope::exporter
