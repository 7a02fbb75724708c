#include "vavae/io/image.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "vavae/common/error.h"
#include "vavae/io/files.h"
#include "vavae/io/image_decode.h"
#include "vavae/io/resample.h"
#include "vavae/io/zip.h"

namespace vavae::io {
namespace {

namespace F = torch::nn::functional;


torch::Tensor to_nchw_float(const Image& image) {
  return torch::from_blob(const_cast<uint8_t*>(image.rgb.data()), {1, image.height, image.width, 3}, torch::kUInt8)
      .permute({0, 3, 1, 2})
      .to(torch::kFloat32);
}

Image from_nchw_float(const torch::Tensor& x) {  // [1, 3, H, W], values in [0, 255]
  Image out;
  out.height = x.size(2);
  out.width = x.size(3);
  torch::Tensor u8 = x.round().clamp(0, 255).to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
  out.rgb.assign(u8.data_ptr<uint8_t>(), u8.data_ptr<uint8_t>() + u8.numel());
  return out;
}

}  // namespace

bool is_image_file(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

Image read_image(const std::string& path, int64_t shorter_side_at_least) {
  const MappedFile file(path);
  const uint8_t* d = file.data();
  const size_t n = file.size();
  static const uint8_t kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= sizeof(kPng) && std::memcmp(d, kPng, sizeof(kPng)) == 0) return decode_png(d, n, path);
  if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) return decode_jpeg(d, n, path, shorter_side_at_least);
  throw Error(path + ": cannot read image: not a PNG or JPEG file (" + std::to_string(n) + " bytes)");
}

torch::Tensor to_unit_tensor(const Image& image) {
  return to_nchw_float(image)[0] / 255.0f;
}

std::string encode_png(const Image& image) {
  std::string encoded;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  if (!stbi_write_png_to_func(append, &encoded, static_cast<int>(image.width), static_cast<int>(image.height), 3,
                              image.rgb.data(), static_cast<int>(image.width * 3)))
    throw Error("PNG encoding of a " + std::to_string(image.height) + "x" + std::to_string(image.width) + " image failed");
  return encoded;
}

void write_png(const std::string& path, const Image& image) {
  const std::string encoded = encode_png(image);
  write_file_atomically(path, [&](std::ostream& out) { out.write(encoded.data(), static_cast<std::streamsize>(encoded.size())); });
}

std::vector<std::string> list_images(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return {path};
  if (!fs::is_directory(path, ec)) throw Error(path + ": no such image file or folder");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path))
    if (entry.is_regular_file() && is_image_file(entry.path().string())) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(path + ": folder holds no PNG or JPEG images");
  return files;
}

namespace {

void check_resolution(int64_t size) {
  if (size <= 0) throw Error("resolution must be positive, got " + std::to_string(size));
}

// ADM's box-halving loop: the image the bicubic step starts from.
Image halve_while_large(Image image, int64_t size) {
  while (std::min(image.height, image.width) >= 2 * size)
    image = resample(image, image.height / 2, image.width / 2, ResampleFilter::box);
  return image;
}

}  // namespace

std::array<int64_t, 2> shorter_side_size(int64_t height, int64_t width, int64_t size) {
  check_resolution(size);
  while (std::min(height, width) >= 2 * size) height /= 2, width /= 2;
  // Python's round (half to even) of x * (size / shorter side), as center_crop_arr computes it.
  const double scale = static_cast<double>(size) / static_cast<double>(std::min(height, width));
  return {static_cast<int64_t>(std::nearbyint(static_cast<double>(height) * scale)),
          static_cast<int64_t>(std::nearbyint(static_cast<double>(width) * scale))};
}

Image resize_shorter_side(const Image& image, int64_t size, Window window) {
  const auto [height, width] = shorter_side_size(image.height, image.width, size);
  const Image halved = halve_while_large(image, size);
  if (halved.height == height && halved.width == width && window.top == 0 && window.left == 0 && window.height < 0 && window.width < 0)
    return halved;
  return resample(halved, height, width, ResampleFilter::bicubic, window);
}

Image crop(const Image& image, int64_t top, int64_t left, int64_t size) {
  if (top < 0 || left < 0 || top + size > image.height || left + size > image.width)
    throw Error("crop " + std::to_string(size) + "x" + std::to_string(size) + " at (" + std::to_string(top) + "," +
                std::to_string(left) + ") leaves the " + std::to_string(image.height) + "x" + std::to_string(image.width) + " image");
  Image out;
  out.height = out.width = size;
  out.rgb.resize(static_cast<size_t>(size * size * 3));
  for (int64_t y = 0; y < size; ++y)
    std::memcpy(&out.rgb[y * size * 3], &image.rgb[((top + y) * image.width + left) * 3], static_cast<size_t>(size * 3));
  return out;
}

Image center_crop_resize(const Image& image, int64_t size) {
  if (image.height == size && image.width == size) return image;
  const auto [height, width] = shorter_side_size(image.height, image.width, size);
  return resize_shorter_side(image, size, Window{(height - size) / 2, (width - size) / 2, size, size});
}

Image flip_horizontal(const Image& image) {
  Image out = image;
  for (int64_t y = 0; y < image.height; ++y)
    for (int64_t x = 0; x < image.width; ++x)
      std::memcpy(&out.rgb[(y * image.width + x) * 3], &image.rgb[(y * image.width + image.width - 1 - x) * 3], 3);
  return out;
}

Image pad(const Image& image, int64_t p) {
  if (p == 0) return image;
  Image out;
  out.height = image.height + 2 * p;
  out.width = image.width + 2 * p;
  out.rgb.assign(static_cast<size_t>(out.height * out.width * 3), 0);
  for (int64_t y = 0; y < image.height; ++y)
    std::memcpy(&out.rgb[((y + p) * out.width + p) * 3], &image.rgb[y * image.width * 3], static_cast<size_t>(image.width * 3));
  return out;
}

torch::Tensor images_to_tensor(const std::vector<Image>& images) {
  if (images.empty()) throw Error("no images to convert");
  static const std::array<float, 256> kTable = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(static_cast<double>(i) / 127.5 - 1.0);
    return t;
  }();
  const int64_t h = images[0].height, w = images[0].width;
  torch::Tensor out = torch::empty({static_cast<int64_t>(images.size()), 3, h, w}, torch::kFloat32);
  float* dst = out.data_ptr<float>();
  for (size_t b = 0; b < images.size(); ++b) {
    const Image& img = images[b];
    if (img.height != h || img.width != w) throw Error("images in one batch differ in size");
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < h * w; ++i) dst[((b * 3) + c) * h * w + i] = kTable[img.rgb[i * 3 + c]];
  }
  return out;
}

std::vector<Image> tensor_to_images(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != 3) throw Error("expected images as [B,3,H,W]");
  torch::NoGradGuard no_grad;
  const torch::Tensor pixels = (x.detach().to(torch::kCPU, torch::kFloat32) + 1.0) * 127.5;
  std::vector<Image> out;
  for (int64_t b = 0; b < x.size(0); ++b) out.push_back(from_nchw_float(pixels.slice(0, b, b + 1)));
  return out;
}

void write_npz_images(const std::string& path, const std::vector<Image>& images) {
  if (images.empty()) throw Error(path + ": no images to write");
  const int64_t h = images[0].height, w = images[0].width;
  // NPY 1.0: magic, version, little-endian header length, a Python dict literal padded with spaces
  // to a multiple of 64 bytes (numpy's alignment) and ended by a newline, then the C-order bytes.
  std::string header = "{'descr': '|u1', 'fortran_order': False, 'shape': (" + std::to_string(images.size()) + ", " + std::to_string(h) +
                       ", " + std::to_string(w) + ", 3), }";
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string npy = std::string("\x93NUMPY\x01\x00", 8);
  npy.push_back(static_cast<char>(header.size() & 0xff));
  npy.push_back(static_cast<char>(header.size() >> 8));
  npy += header;
  for (const Image& image : images) {
    if (image.height != h || image.width != w) throw Error(path + ": images differ in size");
    npy.append(reinterpret_cast<const char*>(image.rgb.data()), image.rgb.size());
  }
  write_zip_stored(path, {{"arr_0.npy", npy}});
}

Image make_grid(const std::vector<std::vector<Image>>& rows) {
  const int64_t gap = 2;
  if (rows.empty() || rows[0].empty()) throw Error("empty image grid");
  const int64_t h = rows[0][0].height, w = rows[0][0].width;
  size_t cols = 0;
  for (const auto& r : rows) cols = std::max(cols, r.size());
  Image grid;
  grid.height = static_cast<int64_t>(rows.size()) * (h + gap) + gap;
  grid.width = static_cast<int64_t>(cols) * (w + gap) + gap;
  grid.rgb.assign(static_cast<size_t>(grid.height * grid.width * 3), 255);
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < rows[r].size(); ++c) {
      const Image& img = rows[r][c];
      if (img.height != h || img.width != w) throw Error("images in a grid differ in size");
      const int64_t y0 = gap + static_cast<int64_t>(r) * (h + gap), x0 = gap + static_cast<int64_t>(c) * (w + gap);
      for (int64_t y = 0; y < h; ++y)
        std::memcpy(&grid.rgb[((y0 + y) * grid.width + x0) * 3], &img.rgb[y * w * 3], static_cast<size_t>(w * 3));
    }
  return grid;
}

}  // namespace vavae::io
