#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "poolscope/pool_config.h"

namespace poolscope {

/// One PoolConfig field that can be set from outside the code: its names in
/// the environment and on the exporter's command line, how its text is read,
/// and what it does.
///
/// pool_settings() is the one list of them. PoolConfig::from_env(), the
/// exporter's flags, its --help and the README's configuration table
/// (poolscope-exporter --print-settings-table) are all built from it. A plain
/// value; the list is immutable, so any thread may read it.
struct PoolSetting {
  std::string_view field;       ///< PoolConfig member, e.g. "max_size"
  std::string_view env;         ///< environment variable, e.g. "POOL_MAX_SIZE"
  std::string_view flag;        ///< exporter flag, e.g. "--pool.max-size"
  std::string_view value_name;  ///< placeholder in --help, e.g. "N", "DURATION"
  std::string_view help;        ///< what the setting does; plain text, no Markdown
  /// What the default means when the field's default value is empty ("" else).
  std::string_view empty_default;
  /// Stores the value `text` denotes in this setting's field of `config`;
  /// throws ConfigError naming `source`. Use apply(), which also sets field().
  void (*parse)(std::string_view text, const std::string& source, PoolConfig& config);
  /// This setting's field of `config` as text parse() reads back.
  std::string (*format)(const PoolConfig& config);

  /// Parses `text`, which came from `source` (the variable or flag), into
  /// `config`. Throws ConfigError naming `source`, with field() set.
  void apply(std::string_view text, const std::string& source, PoolConfig& config) const;
  /// The default as text: the value of a default-constructed PoolConfig,
  /// or empty_default when that is empty.
  std::string default_text() const;
};

/// Every settable PoolConfig field, in the order they are read and listed.
std::span<const PoolSetting> pool_settings() noexcept;

/// The setting of PoolConfig field `field` ("max_size"); nullptr when none.
const PoolSetting* find_pool_setting(std::string_view field) noexcept;

/// The text given for one setting and where it came from.
struct SettingText {
  std::string text;
  std::string source;  ///< the variable or flag that gave it, e.g. "POOL_MAX_SIZE"
};

/// For a setting, the text the user gave and where; nullopt keeps the default.
using SettingLookup = std::function<std::optional<SettingText>(const PoolSetting&)>;

/// Builds a PoolConfig from defaults and what `lookup` gives for each
/// setting, then validates it. Throws ConfigError naming the source of the
/// rejected value; a field left at its default is named by its variable.
PoolConfig read_pool_config(const SettingLookup& lookup);

}  // namespace poolscope
