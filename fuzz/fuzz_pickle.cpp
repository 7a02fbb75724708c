// The pickle machine alone, on raw bytes; storages are small zero tensors of the declared type.
#include <torch/torch.h>

#include "vavae/common/error.h"
#include "vavae/io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const vavae::io::pickle::StorageLoader storage = [](const std::string&, torch::ScalarType dtype, int64_t numel) {
    if (numel > (1 << 16)) throw vavae::Error("fuzz: storage too large");
    return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
  };
  try {
    vavae::io::pickle::unpickle(data, size, storage, "fuzz");
  } catch (const vavae::Error&) {
  }
  return 0;
}
