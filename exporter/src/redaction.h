#pragma once

#include <span>

namespace poolscope::exporter {

/// Overwrites with '*', in place and keeping the length, every secret in a
/// connection string as it was typed: the password of a URI's user info
/// (percent-encoded or not) and the values of the secret keywords
/// (DatabaseUrl::is_secret_keyword: password, sslpassword), whether key=value
/// pairs or URI query parameters. Made for argv, which ps shows to every user:
/// no parsing by libpq, which would decode the text and lose where the secret
/// sits. Thread-safe; changes nothing but `text`.
void mask_connection_secrets(std::span<char> text);

}  // namespace poolscope::exporter
