// IDX image files (the Fashion-MNIST format), plain or gzipped, with a matching label file.
#include <zlib.h>

#include <filesystem>

#include "fuzz_input.h"
#include "vavae/common/error.h"
#include "vavae/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = vavae::fuzz::input_path("_idx");
  std::filesystem::create_directories(dir);
  const bool gzipped = size > 0 && (data[0] & 1);  // the first byte picks plain or gzip
  const std::string images = dir + "/train-images-idx3-ubyte", labels = dir + "/train-labels-idx1-ubyte";
  std::filesystem::remove(images);
  std::filesystem::remove(images + ".gz");
  if (gzipped) {
    gzFile f = gzopen((images + ".gz").c_str(), "wb1");
    gzwrite(f, data + 1, static_cast<unsigned>(size - 1));
    gzclose(f);
  } else {
    std::ofstream(images, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const char label_header[] = {0, 0, 8, 1, 0, 0, 0, 2, 3, 4};
  std::ofstream(labels, std::ios::binary).write(label_header, sizeof(label_header));
  try {
    auto dataset = vavae::data::idx_dataset(dir, "train");
    for (size_t i = 0; i < dataset->size() && i < 4; ++i) dataset->image(i);
  } catch (const vavae::Error&) {
  }
  return 0;
}
