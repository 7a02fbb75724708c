#include "vavae/eval/fid.h"

#include <cstring>
#include <memory>
#include <regex>
#include <sstream>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"
#include "vavae/common/runtime.h"
#include "vavae/io/image.h"
#include "vavae/io/zip.h"

namespace vavae::eval {
namespace {

// sqrt of a symmetric positive semi-definite matrix through its eigen-decomposition (negative
// eigenvalues from rounding are clamped to 0).
torch::Tensor symmetric_sqrt(const torch::Tensor& m) {
  const auto [values, vectors] = torch::linalg_eigh(0.5 * (m + m.transpose(0, 1)), "L");
  return torch::matmul(vectors * values.clamp_min(0).sqrt().unsqueeze(0), vectors.transpose(0, 1));
}

void check(const FeatureStatistics& s, const std::string& what) {
  if (!s.mu.defined() || !s.sigma.defined() || s.mu.dim() != 1 || s.sigma.dim() != 2 || s.sigma.size(0) != s.mu.size(0) ||
      s.sigma.size(1) != s.mu.size(0))
    throw Error(what + ": statistics need mu [D] and sigma [D, D]");
}

// One array of a .npy file: the header's dtype ('<f8' or '<f4'), C order, and its shape.
torch::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0) throw Error(where + ": not a .npy array");
  const int major = data[6];
  size_t header_len = 0, at = 0;
  if (major == 1) header_len = data[8] | (size_t{data[9]} << 8), at = 10;
  else if (major == 2 || major == 3) {
    if (size < 12) throw Error(where + ": truncated .npy header");
    header_len = data[8] | (size_t{data[9]} << 8) | (size_t{data[10]} << 16) | (size_t{data[11]} << 24), at = 12;
  } else {
    throw Error(where + ": .npy version " + std::to_string(major) + " is not supported");
  }
  if (header_len > size - at || header_len > 65536) throw Error(where + ": .npy header runs past the data");
  const std::string header(reinterpret_cast<const char*>(data + at), header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr':\s*'([<|=]f[48])')")))
    throw Error(where + ": only little-endian float32/float64 arrays are read, header " + printable(header, 120));
  const bool f8 = m[1].str().back() == '8';
  if (!std::regex_search(header, std::regex(R"('fortran_order':\s*False)"))) throw Error(where + ": Fortran-ordered arrays are not read");
  if (!std::regex_search(header, m, std::regex(R"('shape':\s*\(([0-9,\s]*)\))"))) throw Error(where + ": .npy header without a shape");
  std::vector<int64_t> shape;
  std::stringstream dims(m[1].str());
  for (std::string d; std::getline(dims, d, ',');) {
    d.erase(0, d.find_first_not_of(' '));
    d.erase(d.find_last_not_of(' ') + 1);
    if (!d.empty()) shape.push_back(parse_count(d, where + ": shape"));
  }
  const int64_t count = checked_product(shape, where + ": shape");
  const int64_t bytes = checked_mul(count, f8 ? 8 : 4, where + ": size");
  at += header_len;
  if (static_cast<uint64_t>(bytes) != size - at)
    throw Error(where + ": holds " + std::to_string(size - at) + " data bytes, its shape needs " + std::to_string(bytes));
  torch::Tensor t = torch::empty(shape, f8 ? torch::kFloat64 : torch::kFloat32);
  if (bytes) std::memcpy(t.data_ptr(), data + at, static_cast<size_t>(bytes));
  return t.to(torch::kFloat64);
}

std::string npy_bytes(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kFloat64).contiguous();
  std::string shape;
  for (int64_t d : c.sizes()) shape += std::to_string(d) + ", ";
  if (c.dim() > 1) shape.erase(shape.size() - 2);
  else if (c.dim() == 1) shape.erase(shape.size() - 1);
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * 8);
  return out;
}

}  // namespace

FeatureStatistics feature_statistics(const torch::Tensor& features) {
  if (features.dim() != 2 || features.size(0) < 2)
    throw Error("FID statistics need [N, D] features with N >= 2, got " + shape_string(features.sizes()));
  const torch::Tensor x = features.to(torch::kCPU, torch::kFloat64);
  FeatureStatistics s;
  s.mu = x.mean(0);
  const torch::Tensor centered = x - s.mu;
  s.sigma = torch::matmul(centered.transpose(0, 1), centered) / static_cast<double>(x.size(0) - 1);
  return s;
}

double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b) {
  check(a, "first set");
  check(b, "second set");
  if (a.mu.size(0) != b.mu.size(0))
    throw Error("FID: feature widths differ (" + std::to_string(a.mu.size(0)) + " and " + std::to_string(b.mu.size(0)) + ")");
  const torch::Tensor s1 = a.sigma.to(torch::kFloat64), s2 = b.sigma.to(torch::kFloat64);
  const torch::Tensor diff = a.mu.to(torch::kFloat64) - b.mu.to(torch::kFloat64);
  const torch::Tensor root1 = symmetric_sqrt(s1);
  const torch::Tensor inner = torch::matmul(torch::matmul(root1, s2), root1);
  const torch::Tensor eigen = torch::linalg_eigvalsh(0.5 * (inner + inner.transpose(0, 1)), "L");
  const double trace_sqrt = eigen.clamp_min(0).sqrt().sum().item<double>();
  return diff.dot(diff).item<double>() + s1.trace().item<double>() + s2.trace().item<double>() - 2 * trace_sqrt;
}

torch::Tensor inception_features(nn::FIDInceptionV3Impl& inception, const std::vector<io::Image>& images, torch::Device device) {
  torch::NoGradGuard no_grad;
  inception.eval();
  std::vector<torch::Tensor> batch;
  for (const auto& image : images) batch.push_back(io::to_unit_tensor(image));
  return inception.forward(torch::stack(batch).to(device)).to(torch::kCPU);
}

torch::Tensor inception_features(nn::FIDInceptionV3Impl& inception, const std::vector<std::string>& files, int64_t batch_size,
                                 torch::Device device) {
  if (files.size() < 2) throw Error("FID needs at least two images, got " + std::to_string(files.size()));
  std::vector<torch::Tensor> features;
  std::vector<io::Image> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    features.push_back(inception_features(inception, batch, device));
    batch.clear();
  };
  for (const auto& file : files) {
    io::Image image = io::read_image(file);
    const bool other_size = !batch.empty() && (batch.front().height != image.height || batch.front().width != image.width);
    if (other_size || static_cast<int64_t>(batch.size()) >= batch_size) flush();
    batch.push_back(std::move(image));
  }
  flush();
  return torch::cat(features);
}

void FeatureSums::add(const torch::Tensor& features) {
  const torch::Tensor f = features.to(torch::kCPU, torch::kFloat64);
  if (!sum.defined()) {
    sum = torch::zeros({f.size(1)}, f.options());
    outer = torch::zeros({f.size(1), f.size(1)}, f.options());
    count = torch::zeros({1}, f.options());
  }
  sum += f.sum(0);
  outer += torch::matmul(f.t(), f);
  count += static_cast<double>(f.size(0));
}

FeatureStatistics FeatureSums::statistics() const {
  const double n = count.defined() ? count.item<double>() : 0.0;
  if (n < 2) throw Error("FID needs at least two images, got " + std::to_string(static_cast<int64_t>(n)));
  const torch::Tensor mu = sum / n;
  // (sum f f^T - n mu mu^T) / (n - 1): the unbiased covariance of the pooled features.
  return {mu, (outer - n * torch::outer(mu, mu)) / (n - 1)};
}

FeatureStatistics read_npz_statistics(const std::string& path) {
  const io::ZipArchive zip(std::make_shared<io::MappedFile>(path));
  FeatureStatistics s;
  for (const auto& [name, target] : {std::pair<const char*, torch::Tensor*>{"mu.npy", &s.mu}, {"sigma.npy", &s.sigma}}) {
    const auto* entry = zip.find(name);
    if (!entry) throw Error(path + ": no " + name + " (pytorch-fid statistics hold mu and sigma)");
    // numpy writes stored entries (savez) or deflated ones (savez_compressed): bounded by 1 GiB either way.
    const auto bytes = zip.read(*entry, uint64_t{1} << 30);
    *target = parse_npy(bytes.data, bytes.size, path + ": " + name);
  }
  check(s, path);
  return s;
}

void write_npz_statistics(const std::string& path, const FeatureStatistics& s) {
  check(s, path);
  io::write_zip_stored(path, {{"mu.npy", npy_bytes(s.mu)}, {"sigma.npy", npy_bytes(s.sigma)}});
}

}  // namespace vavae::eval
