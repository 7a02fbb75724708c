#pragma once
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vavae::io {

// An 8-bit RGB image, row-major HWC.
struct Image {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> rgb;
};

// A rectangle of an image; a negative height or width means "to the end".
struct Window {
  int64_t top = 0, left = 0, height = -1, width = -1;
};

// PNG or JPEG (see image_decode.h) -> 8-bit RGB; a JPEG with `shorter_side_at_least` > 0 is
// decoded DCT-scaled down to about that size (decode_jpeg).
Image read_image(const std::string& path, int64_t shorter_side_at_least = 0);
void write_png(const std::string& path, const Image& image);  // atomic
std::string encode_png(const Image& image);                   // the PNG file's bytes

// PNG or JPEG by extension (case-insensitive): the formats read_image is used for.
bool is_image_file(const std::string& path);

// A file, or the image files (png/jpg/jpeg) directly inside a folder, sorted by name.
std::vector<std::string> list_images(const std::string& path);

// Shorter side to `size` as ADM's center_crop_arr (LightningDiT's extraction) does it with PIL, bit
// for bit: halve with PIL's box filter while the short side is >= 2*size, then PIL's bicubic to
// round(side * size / short side) (Python's round). Only `window` of the result is computed.
Image resize_shorter_side(const Image& image, int64_t size, Window window = {});
// The {height, width} resize_shorter_side gives an image of height x width.
std::array<int64_t, 2> shorter_side_size(int64_t height, int64_t width, int64_t size);

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

// ADM's sample batch (guided-diffusion, LightningDiT's tools/save_npz.py): an uncompressed .npz
// whose arr_0 is the images as uint8 [N, H, W, 3]; written atomically.
void write_npz_images(const std::string& path, const std::vector<Image>& images);

// Rows of equally sized images tiled with a 2-pixel white gap.
Image make_grid(const std::vector<std::vector<Image>>& rows);

}  // namespace vavae::io
