#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace vavae {

// JSON text of a value that may hold strings from files or configs: bytes that are not UTF-8
// become U+FFFD instead of an exception halfway through a log line or a message.
inline std::string json_text(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace vavae
