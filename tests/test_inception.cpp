// pytorch-fid's InceptionV3 against fixtures/inception: resize, every block, the features; both
// weight layouts (pytorch-fid's and the real pt_inception file's Inception3 names).
#include <cmath>
#include <fstream>
#include <sstream>

#include <filesystem>

#include "fixtures.h"
#include "inception_weights.h"
#include "process.h"
#include "vavae/eval/fid.h"
#include "vavae/common/error.h"
#include "vavae/io/image.h"
#include "vavae/io/weights.h"
#include "vavae/nn/inception.h"

namespace vavae::test {
namespace {

// keys.txt: the Inception3 name of every key is its last column.
std::map<std::string, std::string> inception3_names() {
  std::ifstream in(fixture("inception/keys.txt"));
  std::map<std::string, std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> cols;
    for (std::string c; fields >> c;) cols.push_back(c);
    if (cols.size() >= 2 && cols.front().rfind("blocks.", 0) == 0) names[cols.front()] = cols.back();
  }
  return names;
}

class InceptionFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    meta = read_json("inception/meta.json");
    tensors = std::make_unique<io::SafetensorsReader>(fixture("inception/tensors.safetensors"));
    const std::string dir = scratch_dir("inception");
    weights = dir + "/fid_inception.safetensors";
    io::write_safetensors(weights, decode_inception_fixture_weights());
    nn::load_fid_inception(*model, weights);
    model->to(test_device());
  }
  nlohmann::json meta;
  std::unique_ptr<io::SafetensorsReader> tensors;
  std::string weights;
  nn::FIDInceptionV3 model;
};

TEST_F(InceptionFixture, ReproducesTheResizeEveryBlockAndTheFeatures) {
  torch::NoGradGuard no_grad;
  for (const auto& [b, batch] : meta.at("batches").items()) {
    SCOPED_TRACE(b);
    const auto outputs = model->forward_blocks(tensors->tensor(b + ".input").to(test_device()));
    const char* names[] = {"x299", "block0", "block1", "block2", "block3"};
    for (size_t i = 0; i < 5; ++i)
      EXPECT_TRUE(all_close(outputs[i], tensors->tensor(b + "." + names[i]), tolerance_from(meta, b + "." + names[i]))) << names[i];
    EXPECT_TRUE(all_close(model->forward(tensors->tensor(b + ".input").to(test_device())), tensors->tensor(b + ".features"),
                          tolerance_from(meta, b + ".features")));
  }
}

TEST_F(InceptionFixture, ThePngsDecodeToTheFixtureInputs) {
  for (const auto& [b, batch] : meta.at("batches").items()) {
    std::vector<torch::Tensor> images;
    for (const auto& image : batch.at("images")) {
      const io::Image im = io::read_image(fixture("inception/" + image.at("file").get<std::string>()));
      const torch::Tensor u8 = torch::from_blob(const_cast<uint8_t*>(im.rgb.data()), {im.height, im.width, 3}, torch::kUInt8);
      images.push_back(u8.permute({2, 0, 1}).to(torch::kFloat32) / 255.0f);  // ToTensor(): float32(u8) / 255
    }
    EXPECT_TRUE(torch::equal(torch::stack(images), tensors->tensor(b + ".input"))) << b;
  }
}

// `vavae fid` over two image folders: the fixture's PNGs through the network, then the distance of
// their statistics, as pytorch-fid computes it from the same features.
TEST_F(InceptionFixture, FidOfTwoImageFoldersIsTheDistanceOfTheirFeatures) {
  const std::string dir = scratch_dir("fid_folders");
  std::vector<std::string> sets;
  for (const auto& [set, batch] : meta.at("batches").items()) {
    sets.push_back(set);
    std::filesystem::create_directories(dir + "/" + set);
    for (const auto& image : batch.at("images")) {
      const std::string name = image.at("file");
      std::filesystem::copy_file(fixture("inception/" + name), dir + "/" + set + "/" + name);
    }
  }
  ASSERT_GE(sets.size(), 2u);
  const std::string a = sets[0], b = sets[1];
  const ProcessResult r = run_vavae({"fid", dir + "/" + a, dir + "/" + b, "--inception", weights, "--save-stats", dir + "/a.npz", "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  const double expected = eval::frechet_distance(eval::feature_statistics(tensors->tensor(a + ".features")),
                                                 eval::feature_statistics(tensors->tensor(b + ".features")));
  EXPECT_NEAR(std::stod(r.out.substr(r.out.rfind("FID ") + 4)), expected, 1e-4 * expected) << r.out;
  const eval::FeatureStatistics saved = eval::read_npz_statistics(dir + "/a.npz");
  EXPECT_TRUE(all_close(saved.mu, tensors->tensor(a + ".features").mean(0), {1e-5, 1e-4}));
}

TEST_F(InceptionFixture, TheRealFilesInception3NamesLoadTheSameNetwork) {
  const auto names = inception3_names();
  ASSERT_EQ(names.size(), 564u);
  io::NamedTensors renamed;
  for (const auto& [k, t] : decode_inception_fixture_weights()) renamed.emplace_back(names.at(k), t);
  renamed.emplace_back("fc.weight", torch::zeros({1008, 2048}));  // the classifier the features do not use
  renamed.emplace_back("fc.bias", torch::zeros({1008}));
  const std::string path = scratch_dir("inception3") + "/pt_inception.safetensors";
  io::write_safetensors(path, renamed);
  nn::FIDInceptionV3 other;
  nn::load_fid_inception(*other, path);
  const auto a = model->named_parameters(), b = other->named_parameters();
  for (const auto& [k, t] : a.pairs()) EXPECT_TRUE(torch::equal(t.cpu(), b[k])) << k;
  // Missing statistics are refused by name.
  io::NamedTensors partial(renamed.begin() + 6, renamed.end());
  io::write_safetensors(path, partial);
  nn::FIDInceptionV3 broken;
  try {
    nn::load_fid_inception(*broken, path);
    ADD_FAILURE() << "loaded without Conv2d_1a_3x3";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.0.0."), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vavae::test
