#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace vavae {

// glibc serves every allocation above 128 KiB (adaptively up to 32 MiB) with fresh pages from mmap
// and trims free heap above 128 KiB, so each step's activations and each decoded image pay page
// faults again (a third of a loader worker's time; 15-20% of f16d32 encode and decode). Keeping
// allocations below 16 MiB on the heap and up to 64 MiB of free heap top removes most of them at
// the same peak RSS (within 3%, bench/run.sh). Called first thing by the program.
void configure_allocator();

// The pages glibc's heap and large blocks get are still 4 KiB ones, each faulted in on first touch:
// about 11 us a fault on a virtual machine, 2.9 ms per MB, more than the arithmetic of a 256 px
// encode. glibc (2.35 and later) backs them with transparent huge pages, one fault per 2 MiB, when
// its tunable glibc.malloc.hugetlb=1 is set, which it reads only at process start: so the program
// runs itself again once with the tunable added to GLIBC_TUNABLES. Skipped where the kernel's
// transparent huge pages are off, glibc is older, the tunable is already set (by the user too, to
// 0 for none), or VAVAE_HUGE_PAGES=0. Returns only when it does not re-execute.
void request_huge_pages(char** argv);
// Whether glibc runs with transparent huge pages (its tunable set to 1 at start), and the tunables.
bool huge_pages_in_effect();
std::string glibc_tunables();

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
