#pragma once
// fixtures/inception's weights (pytorch-fid's key layout with random values) as float tensors.
#include <cmath>
#include <string>

#include "fixtures.h"
#include "vavae/io/safetensors.h"
#include "vavae/io/weights.h"

namespace vavae::test {

// The fixture stores weights as I8 codes k with value = offset + k * 2^-exp (exact in float32).
inline io::NamedTensors decode_inception_fixture_weights() {
  io::SafetensorsReader reader(fixture("inception/inception_weights_i8.safetensors"));
  io::NamedTensors out;
  for (const auto& e : reader.entries()) {
    torch::Tensor t = reader.tensor(e.name);
    if (e.dtype == "I8") {
      const double exp = std::stod(reader.metadata().at("exp:" + e.name));
      const double offset = std::stod(reader.metadata().at("offset:" + e.name));
      t = (t.to(torch::kFloat64) * std::ldexp(1.0, -static_cast<int>(exp)) + offset).to(torch::kFloat32);
    }
    out.emplace_back(e.name, t);
  }
  return out;
}

// The decoded weights written once per test process as a safetensors file; returns its path.
inline std::string inception_fixture_weights_file() {
  static const std::string path = [] {
    const std::string file = scratch_dir("inception_weights") + "/fid_inception.safetensors";
    io::write_safetensors(file, decode_inception_fixture_weights());
    return file;
  }();
  return path;
}

}  // namespace vavae::test
