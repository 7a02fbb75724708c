#pragma once
#include <cstdint>
#include <string>

#include "vavae/common/error.h"

// Arithmetic on sizes that come from files: every product and sum is overflow-checked, and numbers
// written as text are parsed strictly, so no hostile value wraps around or escapes as a foreign
// exception.
namespace vavae {

inline int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw Error(what + ": " + std::to_string(a) + " x " + std::to_string(b) + " overflows");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) throw Error(what + ": " + std::to_string(a) + " + " + std::to_string(b) + " overflows");
  return r;
}

// The product of non-negative sizes, or an Error naming `what`.
template <typename Sizes>
int64_t checked_product(const Sizes& sizes, const std::string& what) {
  int64_t n = 1;
  for (const auto s : sizes) {
    if (s < 0) throw Error(what + ": negative size " + std::to_string(s));
    n = checked_mul(n, static_cast<int64_t>(s), what);
  }
  return n;
}

// A decimal count 0 <= n < 2^62 written as text ("12", not "12x", "-1" or "1e3").
inline int64_t parse_count(const std::string& text, const std::string& what) {
  if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos)
    throw Error(what + " is not a count: '" + text.substr(0, 40) + "'");
  return std::stoll(text);
}

}  // namespace vavae
