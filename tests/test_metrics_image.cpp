// PSNR / SSIM against scikit-image's values, and the image conversions.
#include <cmath>

#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/eval/metrics.h"
#include "vavae/io/image.h"

namespace vavae::test {
namespace {

io::Image image_at(const torch::Tensor& batch, int64_t i) {  // uint8 [N, H, W, 3]
  const torch::Tensor t = batch[i].contiguous();
  io::Image img;
  img.height = t.size(0);
  img.width = t.size(1);
  img.rgb.assign(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + t.numel());
  return img;
}

TEST(Metrics, PsnrAndSsimMatchScikitImage) {
  io::SafetensorsReader images(fixture("metrics/images.safetensors"));
  const torch::Tensor ref = images.tensor("ref"), dist = images.tensor("dist");
  const auto expected = read_json("metrics/expected.json").at("results");
  ASSERT_EQ(static_cast<int64_t>(expected.size()), ref.size(0));
  for (int64_t i = 0; i < ref.size(0); ++i) {
    const auto& e = expected[i];
    const double psnr = eval::psnr(image_at(ref, i), image_at(dist, i));
    const double ssim = eval::ssim(image_at(ref, i), image_at(dist, i));
    if (e.at("psnr").is_null()) EXPECT_TRUE(std::isinf(psnr)) << e.at("kind");
    else EXPECT_NEAR(psnr, e.at("psnr").get<double>(), 1e-9) << e.at("kind");
    // Both sides compute in double over the same valid-window region; only summation order differs.
    EXPECT_NEAR(ssim, e.at("ssim").get<double>(), 1e-9) << e.at("kind");
  }
}

// Validation and `vavae eval` score whole batches at once: the same numbers as image by image.
TEST(Metrics, BatchScoresEqualPerImageScores) {
  io::SafetensorsReader images(fixture("metrics/images.safetensors"));
  const torch::Tensor ref = images.tensor("ref"), dist = images.tensor("dist");
  std::vector<io::Image> refs, dists;
  for (int64_t i = 0; i < ref.size(0); ++i) refs.push_back(image_at(ref, i)), dists.push_back(image_at(dist, i));
  const torch::Tensor psnrs = eval::psnr_each(refs, dists), ssims = eval::ssim_each(refs, dists);
  ASSERT_EQ(psnrs.size(0), ref.size(0));
  for (int64_t i = 0; i < ref.size(0); ++i) {
    const double psnr = eval::psnr(refs[static_cast<size_t>(i)], dists[static_cast<size_t>(i)]);
    if (std::isinf(psnr)) EXPECT_TRUE(std::isinf(psnrs[i].item<double>())) << i;
    else EXPECT_DOUBLE_EQ(psnrs[i].item<double>(), psnr) << i;
    EXPECT_DOUBLE_EQ(ssims[i].item<double>(), eval::ssim(refs[static_cast<size_t>(i)], dists[static_cast<size_t>(i)])) << i;
  }
  dists.pop_back();
  EXPECT_THROW(eval::ssim_each(refs, dists), Error);
}

TEST(Image, MapsEveryByteToFloat32OfTheDoubleFormula) {
  io::Image img;
  img.height = 16;
  img.width = 16;
  img.rgb.resize(16 * 16 * 3);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = static_cast<uint8_t>(i % 256);
  const torch::Tensor x = io::images_to_tensor({img});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t p = 0; p < 256; ++p) {
      const uint8_t byte = img.rgb[p * 3 + c];
      ASSERT_EQ(x[0][c].flatten()[p].item<float>(), static_cast<float>(byte / 127.5 - 1.0));
    }
  // and back: the inverse mapping rounds to the same bytes
  EXPECT_EQ(io::tensor_to_images(x)[0].rgb, img.rgb);
}

TEST(Image, CenterCropResizeGivesTheRequestedSquare) {
  io::Image wide;
  wide.height = 60;
  wide.width = 100;
  wide.rgb.assign(60 * 100 * 3, 0);
  for (int64_t y = 0; y < 60; ++y)
    for (int64_t x = 40; x < 60; ++x) wide.rgb[(y * 100 + x) * 3] = 255;  // a red stripe in the centre
  const io::Image out = io::center_crop_resize(wide, 24);
  EXPECT_EQ(out.height, 24);
  EXPECT_EQ(out.width, 24);
  EXPECT_GT(out.rgb[(12 * 24 + 12) * 3], 200);  // the centre stays red
  EXPECT_LT(out.rgb[(12 * 24 + 0) * 3], 30);    // the crop keeps the dark sides
  const io::Image same = io::center_crop_resize(out, 24);
  EXPECT_EQ(same.rgb, out.rgb);
}

}  // namespace
}  // namespace vavae::test
