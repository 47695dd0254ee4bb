#pragma once

#include <string>

#include "poolscope/error.h"

namespace poolscope::exporter {

/// A command-line flag, environment variable or web configuration file was
/// rejected. The message is one line that names the flag, variable or file
/// key, the rejected value (never a password) and what is accepted; the
/// exporter prints it and exits with status 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message) {}
};

}  // namespace poolscope::exporter
