#pragma once
#include <stdexcept>
#include <string>

namespace vavae {

// The one exception type for failures caused by user input (files, configs, arguments).
// Its message is a single line that names the file, key, tensor, shape or value at fault.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace vavae
