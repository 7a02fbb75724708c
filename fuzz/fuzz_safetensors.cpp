// safetensors: header validation, then every tensor copied out.
#include "fuzz_input.h"
#include "vavae/common/error.h"
#include "vavae/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vavae::fuzz::write_input(data, size, ".safetensors");
  try {
    vavae::io::SafetensorsReader reader(path);
    for (const auto& e : reader.entries()) reader.tensor(e.name);
  } catch (const vavae::Error&) {
  }
  return 0;
}
