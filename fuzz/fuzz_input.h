#pragma once
// Shared by the libFuzzer harnesses: inputs reach the readers as files (their real entry point),
// written to a per-process path in /dev/shm (or $TMPDIR). A vavae::Error is the expected outcome
// of a bad input; any other exception, a crash or a sanitizer report is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace vavae::fuzz {

inline std::string input_path(const std::string& suffix) {
  const char* dir = std::getenv("VAVAE_FUZZ_DIR");
  return std::string(dir && *dir ? dir : "/dev/shm") + "/vavae_fuzz_" + std::to_string(::getpid()) + suffix;
}

inline std::string write_input(const uint8_t* data, size_t size, const std::string& suffix) {
  const std::string path = input_path(suffix);
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

}  // namespace vavae::fuzz
