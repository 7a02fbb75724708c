// torch.save files, zip and legacy: the zip reader, the unpickler, storages and views, then the
// state-dict search that `inspect` and `export` run.
#include "fuzz_input.h"
#include "vavae/common/error.h"
#include "vavae/io/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = vavae::fuzz::write_input(data, size, ".pt");
  try {
    const vavae::io::WeightFile file = vavae::io::read_weights(path);
    for (const auto& [name, t] : file.tensors) (void)t.contiguous();
  } catch (const vavae::Error&) {
  }
  return 0;
}
