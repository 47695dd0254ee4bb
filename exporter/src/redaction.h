#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace poolscope::exporter {

/// The password in `database_url` (libpq URI or key=value string, including a
/// password given as a URI query parameter); "" when there is none or libpq
/// cannot parse the string. Thread-safe.
std::string database_password(const std::string& database_url);

/// Every secret value in `database_url` (password and sslpassword, the
/// options libpq marks as secret), non-empty ones only. Thread-safe.
std::vector<std::string> database_secrets(const std::string& database_url);

/// Overwrites with '*', in place and keeping the length, every secret in a
/// connection string as it was typed: the password of a URI's user info
/// (percent-encoded or not) and the values of password and sslpassword,
/// whether key=value pairs or URI query parameters. Made for argv, which ps
/// shows to every user: no parsing by libpq, which would decode the text and
/// lose where the secret sits. Pure function on its argument.
void mask_connection_secrets(std::span<char> text);

/// Replaces every occurrence of `secret` in `text` with "***". An empty secret
/// changes nothing. Used on texts that come from outside the exporter (server
/// error messages) before they are shown, as a second line of defence behind
/// the pool's own redaction.
void scrub_secret(std::string& text, std::string_view secret);

}  // namespace poolscope::exporter
