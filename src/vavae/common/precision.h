#pragma once
#include <torch/torch.h>

#include <string>

namespace vavae {

// The arithmetic of a network's forward pass: fp32, or bf16 autocast (torch.autocast with
// dtype=torch.bfloat16: matmuls and convolutions in bf16, reductions and norms as autocast decides,
// parameters, gradients and optimizer state in fp32).
enum class Precision { fp32, bf16 };

// Whether `device` runs bf16 matmuls and convolutions in hardware: CUDA, and CPUs with AVX512-BF16
// (AMD Zen 4, Intel Cooper Lake and later, AMX parts included), where oneDNN's bf16 convolutions
// take about half the time of fp32 ones. Elsewhere bf16 is emulated and slower than fp32.
bool bf16_is_native(torch::Device device);

// "no" / "fp32" or "bf16" (accelerate's --mixed_precision names, plus fp32); "auto" gives bf16
// where bf16_is_native(device) and fp32 elsewhere. `where` names the key or option in the error.
Precision parse_precision(const std::string& value, torch::Device device, const std::string& where);
std::string precision_name(Precision p);

// A defined float32 tensor in CPU memory: what the hand-written CPU kernels take.
inline bool is_cpu_float(const torch::Tensor& t) { return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32; }

// Whether autocast is on for `device`'s type here (convolutions would then run in its dtype).
bool autocast_active(torch::Device device);

// Within the scope, autocast for `device`'s type is on in `precision` (bf16) or off (fp32: the
// fp32 regions of a mixed-precision step, such as losses and Gram matrices). The state before is
// restored on exit and the cast cache cleared when the outermost scope ends, as torch.autocast does.
class AutocastScope {
 public:
  AutocastScope(torch::Device device, Precision precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  at::DeviceType type_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
};

}  // namespace vavae
