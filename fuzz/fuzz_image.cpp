// Image decoding (PNG, JPEG, BMP through stb, with the size caps) into the RGB the loader uses.
#include "fuzz_input.h"
#include "vavae/common/error.h"
#include "vavae/io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vavae::fuzz::write_input(data, size, ".png");
  try {
    const vavae::io::Image image = vavae::io::read_image(path);
    if (image.rgb.size() != static_cast<size_t>(image.width * image.height * 3)) __builtin_trap();
  } catch (const vavae::Error&) {
  }
  return 0;
}
