#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vavae::io {

// An 8-bit RGB image, row-major HWC.
struct Image {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> rgb;
};

Image read_image(const std::string& path);  // PNG or JPEG (see image_decode.h) -> 8-bit RGB
void write_png(const std::string& path, const Image& image);  // atomic
std::string encode_png(const Image& image);                   // the PNG file's bytes

// PNG or JPEG by extension (case-insensitive): the formats read_image is used for.
bool is_image_file(const std::string& path);

// A file, or the image files (png/jpg/jpeg) directly inside a folder, sorted by name.
std::vector<std::string> list_images(const std::string& path);

// Shorter side to `size` the way the ADM/LightningDiT data pipeline does it: halve with a box
// filter while the short side is >= 2*size, then bicubic (antialiased, PIL's a = -0.5) to the exact
// size, rounded to 8 bit. Unchanged when the shorter side already is `size`.
Image resize_shorter_side(const Image& image, int64_t size);

// The size x size square at (top, left).
Image crop(const Image& image, int64_t top, int64_t left, int64_t size);

// resize_shorter_side, then the centre square.
Image center_crop_resize(const Image& image, int64_t size);

// Mirror left-right; zero-pad every side by `pad` pixels.
Image flip_horizontal(const Image& image);
Image pad(const Image& image, int64_t pad);

// [B, 3, H, W] float32 in [-1, 1] as float32(double(u8) / 127.5 - 1) (the exact fixture mapping).
torch::Tensor images_to_tensor(const std::vector<Image>& images);
// torchvision's ToTensor(): [3, H, W] float32 u8 / 255 computed in float32 (pytorch-fid's and
// LightningDiT's inference input, which differs by an ulp from the double formula above).
torch::Tensor to_unit_tensor(const Image& image);

// [B, 3, H, W] in [-1, 1] -> 8-bit images: round((x + 1) * 127.5), clamped to [0, 255].
std::vector<Image> tensor_to_images(const torch::Tensor& x);

// Rows of equally sized images tiled with a 2-pixel white gap.
Image make_grid(const std::vector<std::vector<Image>>& rows);

}  // namespace vavae::io
