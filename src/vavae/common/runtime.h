#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace vavae {

// Sets LibTorch's intra-op thread count; 0 means all cores. Returns the count in effect.
int configure_threads(int requested);

// "cpu", "cuda" or "auto" (CUDA when available). Asking for CUDA without it is an Error.
torch::Device resolve_device(const std::string& name);

// "[2,3,32,32]": the shape notation used in every message.
std::string shape_string(at::IntArrayRef shape);

// Text from a file made safe to print: control characters (terminal escape sequences included),
// C1 controls and invalid UTF-8 become \xNN; longer than `max_bytes` is cut with "...".
std::string printable(const std::string& text, size_t max_bytes = 200);

// Peak resident set size of this process in MiB (Linux VmHWM).
double peak_rss_mib();

}  // namespace vavae
