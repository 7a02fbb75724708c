#include "vavae/common/runtime.h"

#include <gnu/libc-version.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <fstream>
#include <sstream>
#include <thread>

#include "vavae/common/error.h"

namespace vavae {

void configure_allocator() {
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

namespace {

// "always" or "madvise" (glibc's tunable madvises): the bracketed word of the kernel's setting.
bool transparent_huge_pages_available() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string setting((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return setting.find("[always]") != std::string::npos || setting.find("[madvise]") != std::string::npos;
}

bool glibc_has_hugetlb_tunable() {
  int major = 0, minor = 0;
  if (std::sscanf(gnu_get_libc_version(), "%d.%d", &major, &minor) != 2) return false;
  return major > 2 || (major == 2 && minor >= 35);
}

}  // namespace

void request_huge_pages(char** argv) {
  const char* opt_out = std::getenv("VAVAE_HUGE_PAGES");
  if (opt_out && std::string(opt_out) == "0") return;
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  const std::string current = tunables ? tunables : "";
  if (current.find("glibc.malloc.hugetlb") != std::string::npos) return;
  if (!glibc_has_hugetlb_tunable() || !transparent_huge_pages_available()) return;
  // Set before the exec, checked above: a glibc that drops the variable cannot make this loop.
  if (std::getenv("VAVAE_HUGE_PAGES_REQUESTED")) return;
  setenv("VAVAE_HUGE_PAGES_REQUESTED", "1", 1);
  setenv("GLIBC_TUNABLES", (current.empty() ? std::string() : current + ":").append("glibc.malloc.hugetlb=1").c_str(), 1);
  execv("/proc/self/exe", argv);
  unsetenv("GLIBC_TUNABLES");  // exec failed: run on as before
  if (tunables) setenv("GLIBC_TUNABLES", tunables, 1);
}

std::string glibc_tunables() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return tunables ? tunables : "";
}

bool huge_pages_in_effect() {
  const std::string tunables = ":" + glibc_tunables() + ":";
  return glibc_has_hugetlb_tunable() && tunables.find(":glibc.malloc.hugetlb=1:") != std::string::npos;
}


int configure_threads(int requested) {
  if (requested < 0) throw Error("--threads must be >= 0 (0 = all cores), got " + std::to_string(requested));
  int n = requested;
  if (n == 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return at::get_num_threads();
}

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available())
      throw Error("--device cuda: this build of LibTorch sees no CUDA device");
    return torch::kCUDA;
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  throw Error("--device must be cpu, cuda or auto, got '" + name + "'");
}

std::string shape_string(at::IntArrayRef shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? "," : "") << shape[i];
  out << ']';
  return out.str();
}

std::string printable(const std::string& text, size_t max_bytes) {
  std::string out;
  auto escape = [&](unsigned char c) {
    const char* digits = "0123456789abcdef";
    out += "\\x";
    out += digits[c >> 4];
    out += digits[c & 15];
  };
  const size_t n = std::min(text.size(), max_bytes);
  for (size_t i = 0; i < n;) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      escape(c);
      ++i;
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence other than a C1 control (U+0080..U+009F) is kept whole.
    const size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? (c < 0xf0 ? 3 : 0) : c >= 0xc2 ? 2 : 0;
    bool valid = len > 0 && i + len <= n;
    for (size_t k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (valid && len == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) valid = false;
    if (!valid) {
      escape(c);
      ++i;
      continue;
    }
    out.append(text, i, len);
    i += len;
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

}  // namespace vavae
