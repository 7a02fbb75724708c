// Datasets, transforms and the deterministic loader.
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/data/loader.h"
#include "vavae/io/resample.h"

#include <nlohmann/json.hpp>

namespace vavae::test {
namespace {

// A small IDX pair (gzipped), `n` images of h x w with pixel (i, p) = (i * 7 + p) % 256, label i % 10.
std::string write_idx(const std::string& dir, int n, int h, int w) {
  auto be = [](std::string& s, uint32_t v) {
    for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 255));
  };
  std::string images, labels;
  be(images, 0x803), be(images, n), be(images, h), be(images, w);
  be(labels, 0x801), be(labels, n);
  for (int i = 0; i < n; ++i) {
    for (int p = 0; p < h * w; ++p) images.push_back(static_cast<char>((i * 7 + p) % 256));
    labels.push_back(static_cast<char>(i % 10));
  }
  std::filesystem::create_directories(dir);
  for (const auto& [name, bytes] : {std::pair<std::string, std::string>{"train-images-idx3-ubyte.gz", images},
                                    {"train-labels-idx1-ubyte.gz", labels}}) {
    gzFile f = gzopen((dir + "/" + name).c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  }
  return dir;
}

TEST(Data, ReadsGzippedIdxAsRgbWithLabels) {
  const auto ds = data::open_dataset("idx:" + write_idx(scratch_dir("idx"), 12, 6, 5) + ":train");
  ASSERT_EQ(ds->size(), 12u);
  const io::Image img = ds->image(3);
  EXPECT_EQ(img.height, 6);
  EXPECT_EQ(img.width, 5);
  EXPECT_EQ(img.rgb[3 * 4 + 1], (3 * 7 + 4) % 256);  // pixel 4, green channel = gray value
  EXPECT_EQ(ds->label(3), 3);
}

TEST(Data, ReadsTheInstalledFashionMnist) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const auto train = data::open_dataset("fashion-mnist:train"), test = data::open_dataset("fashion-mnist:test");
  EXPECT_EQ(train->size(), 60000u);
  EXPECT_EQ(test->size(), 10000u);
  EXPECT_EQ(train->image(0).height, 28);
  EXPECT_GE(train->label(0), 0);
  EXPECT_LE(train->label(0), 9);
}

TEST(Data, BadSourcesNameThemselves) {
  EXPECT_THROW(data::open_dataset("/no/such/folder"), Error);
  try {
    data::open_dataset("idx:" + scratch_dir("empty_idx"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train-images-idx3-ubyte"), std::string::npos) << e.what();
  }
}

TEST(Loader, BatchesAreAPureFunctionOfSeedEpochAndIndex) {
  const auto ds = data::open_dataset("idx:" + write_idx(scratch_dir("idx_loader"), 40, 28, 28));
  data::LoaderConfig c;
  c.batch_size = 8, c.seed = 5;
  c.transform = {32, 2, true, true};
  data::Loader a(ds, c), b(ds, c);
  EXPECT_EQ(a.batches_per_epoch(), 5);
  const data::Batch x = a.batch(1, 3), y = b.batch(1, 3);
  EXPECT_EQ(x.images.sizes(), (std::vector<int64_t>{8, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(x.images, y.images));
  EXPECT_TRUE(torch::equal(x.labels, y.labels));
  EXPECT_FALSE(torch::equal(a.batch(0, 3).images, x.images));
  // Sequential reading with prefetching gives the same batches.
  a.start(1, 2);
  a.next();
  EXPECT_TRUE(torch::equal(a.next().images, x.images));
  // An epoch visits every item once.
  std::vector<int64_t> seen;
  for (int64_t i = 0; i < 5; ++i) {
    const auto l = a.batch(2, i).labels;
    seen.insert(seen.end(), l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
  }
  for (int64_t label = 0; label < 10; ++label) EXPECT_EQ(std::count(seen.begin(), seen.end(), label), 4) << label;
}

TEST(Loader, PadsCentreCropsAndFlips) {
  io::Image img;
  img.height = img.width = 4;
  img.rgb.assign(48, 0);
  img.rgb[0] = 255;  // top-left red
  const io::Image padded = io::pad(img, 2);
  EXPECT_EQ(padded.height, 8);
  EXPECT_EQ(padded.rgb[(2 * 8 + 2) * 3], 255);
  EXPECT_EQ(padded.rgb[0], 0);
  EXPECT_EQ(io::flip_horizontal(img).rgb[3 * 3], 255);  // now top-right
}

TEST(Loader, SkipsAndCountsUnreadableImages) {
  const std::string dir = scratch_dir("folder_corrupt");
  std::filesystem::create_directories(dir + "/cats");
  io::Image img;
  img.height = img.width = 8;
  img.rgb.assign(8 * 8 * 3, 100);
  for (int i = 0; i < 5; ++i) io::write_png(dir + "/cats/" + std::to_string(i) + ".png", img);
  std::ofstream(dir + "/cats/broken.png") << "not a png";
  const auto ds = data::open_dataset(dir);
  data::LoaderConfig c;
  c.batch_size = 6, c.shuffle = false;
  c.transform = {8, 0, false, false};
  data::Loader loader(ds, c);
  const data::Batch b = loader.batch(0, 0);
  EXPECT_EQ(b.images.size(0), 6);  // filled up with the next readable items
  EXPECT_EQ(loader.skipped(), 1);
}

// tests/pillow/make.py wrote Pillow 9.4's own resizes of one photo (odd sizes, up and down, box and
// bicubic), guided-diffusion's center_crop_arr of it, and its JPEG decoded at 1, 1/2, 1/4 and 1/8
// of full size (draft()): ours must equal them byte for byte.
TEST(Resample, EqualsPillowBitForBit) {
  const std::string folder = std::string(VAVAE_SOURCE_DIR) + "/tests/pillow";
  std::ifstream in(folder + "/cases.json");
  const nlohmann::json cases = nlohmann::json::parse(in);
  const io::Image source = io::read_image(folder + "/" + cases["source"].get<std::string>());
  int checked = 0;
  for (const auto& c : cases["cases"]) {
    const io::Image expected = io::read_image(folder + "/" + c["file"].get<std::string>());
    io::Image ours;
    if (c["kind"] == "resize")
      ours = io::resample(source, c["height"], c["width"], c["filter"] == "box" ? io::ResampleFilter::box : io::ResampleFilter::bicubic);
    else if (c["kind"] == "center_crop_arr")
      ours = io::center_crop_resize(source, c["size"]);
    else  // jpeg_draft: Pillow's draft() is libjpeg-turbo's DCT scaling, as is ours
      ours = io::read_image(folder + "/source.jpg", c["shorter_side_at_least"]);
    ASSERT_EQ(ours.height, expected.height) << c["file"];
    ASSERT_EQ(ours.width, expected.width) << c["file"];
    EXPECT_EQ(ours.rgb, expected.rgb) << c["file"];
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

TEST(Resample, AWindowEqualsTheCropOfTheWholeResize) {
  const io::Image source = io::read_image(std::string(VAVAE_SOURCE_DIR) + "/tests/pillow/source.png");
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{61, 47}, {200, 300}, {123, 40}}) {
    const io::Image whole = io::resample(source, h, w, io::ResampleFilter::bicubic);
    for (const io::Window window : {io::Window{0, 0, 1, 1}, io::Window{h / 3, w / 4, h / 2, w / 2}, io::Window{h - 5, w - 7, 5, 7}}) {
      const io::Image part = io::resample(source, h, w, io::ResampleFilter::bicubic, window);
      io::Image expected;
      expected.height = window.height, expected.width = window.width;
      for (int64_t y = 0; y < window.height; ++y)
        expected.rgb.insert(expected.rgb.end(), whole.rgb.begin() + ((window.top + y) * w + window.left) * 3,
                            whole.rgb.begin() + ((window.top + y) * w + window.left + window.width) * 3);
      EXPECT_EQ(part.rgb, expected.rgb) << h << "x" << w << " window at " << window.top << "," << window.left;
    }
  }
  EXPECT_THROW(io::resample(source, 10, 10, io::ResampleFilter::box, io::Window{5, 5, 6, 1}), Error);
}

}  // namespace
}  // namespace vavae::test
