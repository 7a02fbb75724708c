#include "vavae/common/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "vavae/common/error.h"

namespace vavae {
namespace {

// LibTorch 2.4 made the autocast state per device type; 1.13 to 2.3 name CPU and CUDA separately.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_enabled(at::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
void set_autocast_enabled(at::DeviceType t, bool on) { at::autocast::set_autocast_enabled(t, on); }
at::ScalarType autocast_dtype(at::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
void set_autocast_dtype(at::DeviceType t, at::ScalarType d) { at::autocast::set_autocast_dtype(t, d); }
#else
bool autocast_enabled(at::DeviceType t) { return t == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
void set_autocast_enabled(at::DeviceType t, bool on) {
  if (t == at::kCUDA) at::autocast::set_enabled(on);
  else at::autocast::set_cpu_enabled(on);
}
at::ScalarType autocast_dtype(at::DeviceType t) {
  return t == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(at::DeviceType t, at::ScalarType d) {
  if (t == at::kCUDA) at::autocast::set_autocast_gpu_dtype(d);
  else at::autocast::set_autocast_cpu_dtype(d);
}
#endif

}  // namespace

bool bf16_is_native(torch::Device device) {
  if (device.is_cuda()) return true;
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

Precision parse_precision(const std::string& value, torch::Device device, const std::string& where) {
  if (value == "no" || value == "fp32") return Precision::fp32;
  if (value == "bf16") return Precision::bf16;
  if (value == "auto") return bf16_is_native(device) ? Precision::bf16 : Precision::fp32;
  throw Error(where + " must be no, fp32, bf16 or auto, got '" + value + "'");
}

bool autocast_active(torch::Device device) { return autocast_enabled(device.is_cuda() ? at::kCUDA : at::kCPU); }

std::string precision_name(Precision p) { return p == Precision::bf16 ? "bf16 autocast" : "fp32"; }

AutocastScope::AutocastScope(torch::Device device, Precision precision)
    : type_(device.is_cuda() ? at::kCUDA : at::kCPU), was_enabled_(autocast_enabled(type_)), was_dtype_(autocast_dtype(type_)) {
  if (precision == Precision::bf16) set_autocast_dtype(type_, at::kBFloat16);
  set_autocast_enabled(type_, precision == Precision::bf16);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast_enabled(type_, was_enabled_);
  set_autocast_dtype(type_, was_dtype_);
}

}  // namespace vavae
