// vavae eval: evaluate_tokenizer.py's transform, 8-bit conversion and torchmetrics SSIM against
// hand computations; the command's files against each other, the saved images and `vavae fid`.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fixtures.h"
#include "inception_weights.h"
#include "process.h"
#include "vavae/config/model_config.h"
#include "vavae/eval/metrics.h"
#include "vavae/eval/tokenizer_eval.h"
#include "vavae/io/image.h"

namespace vavae::test {
namespace {

namespace fs = std::filesystem;

io::Image gray_image(int64_t height, int64_t width, const std::function<uint8_t(int64_t, int64_t)>& value) {
  io::Image im;
  im.height = height, im.width = width;
  im.rgb.resize(static_cast<size_t>(height * width * 3));
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) im.rgb[static_cast<size_t>((y * width + x) * 3 + c)] = value(y, x);
  return im;
}

// ToTensor then Normalize(0.5, 0.5), in float32 as torchvision computes them.
float normalized(double u8) { return (static_cast<float>(u8) / 255.0f - 0.5f) / 0.5f; }

TEST(EvaluationTransform, DownscalesAsAntialiasedBilinearAndCropsTheCentre) {
  // A ramp (value = column) 40 x 64 at 20: resized to 20 x 32, then columns 6..25 kept.
  const torch::Tensor t = eval::evaluation_transform(gray_image(40, 64, [](int64_t, int64_t x) { return uint8_t(x); }), 20);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 20, 20}));
  // Halving with the antialiased (triangle, radius 2) filter keeps a ramp a ramp where the filter
  // fits inside the image: output column j lies at source 2j + 0.5.
  for (int64_t c = 0; c < 20; ++c) {
    const int64_t j = c + 6;
    if (j < 1 || j > 30) continue;
    for (int64_t y = 0; y < 20; ++y) EXPECT_NEAR(t[1][y][c].item<double>(), normalized(2.0 * j + 0.5), 2e-6) << y << "," << c;
  }
  // A constant image stays exactly constant.
  const torch::Tensor flat = eval::evaluation_transform(gray_image(50, 37, [](int64_t, int64_t) { return uint8_t(77); }), 16);
  EXPECT_TRUE(torch::allclose(flat, torch::full({3, 16, 16}, normalized(77)), 0, 1e-6));
}

TEST(EvaluationTransform, CropOffsetsRoundHalfToEvenAsPythonDoes) {
  auto column = [](int64_t, int64_t x) { return uint8_t(x * 7); };
  for (const auto& [width, left] : std::vector<std::pair<int64_t, int64_t>>{{33, 2}, {35, 4}, {29, 0}, {31, 2}}) {
    // The shorter side already is the size: no resampling, only the crop.
    const torch::Tensor t = eval::evaluation_transform(gray_image(28, width, column), 28);
    for (int64_t c = 0; c < 28; ++c) EXPECT_EQ(t[0][5][c].item<float>(), normalized(uint8_t((c + left) * 7))) << width << " col " << c;
  }
}

TEST(UpstreamPng, ShiftsByOneHalfClampsAndTruncates) {
  const std::vector<float> values{-1.5f, -1.0f, static_cast<float>(-1.0 + 1.0 / 127.5), 0.0f, 0.003f, 0.99f, 1.0f, 2.0f};
  const std::vector<uint8_t> expected{0, 0, 1, 128, 128, 254, 255, 255};  // floor(clamp(127.5 v + 128))
  const torch::Tensor x = torch::tensor(values).view({1, 1, 1, -1}).expand({1, 3, 1, -1}).contiguous();
  const io::Image im = eval::to_upstream_8bit(x).at(0);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(im.rgb[i * 3 + 1], expected[i]) << values[i];
}

// SSIM of one [H, W] plane pair written out as the window sums of Wang et al.
double hand_ssim(const torch::Tensor& a, const torch::Tensor& b, double range) {
  double g[11], total = 0;
  for (int k = 0; k < 11; ++k) total += g[k] = std::exp(-0.5 * (k - 5) * (k - 5) / (1.5 * 1.5));
  for (double& v : g) v /= total;
  const auto x = a.accessor<double, 2>(), y = b.accessor<double, 2>();
  const double c1 = std::pow(0.01 * range, 2), c2 = std::pow(0.03 * range, 2);
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i + 11 <= a.size(0); ++i)
    for (int64_t j = 0; j + 11 <= a.size(1); ++j, ++count) {
      double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
      for (int p = 0; p < 11; ++p)
        for (int q = 0; q < 11; ++q) {
          const double w = g[p] * g[q], u = x[i + p][j + q], v = y[i + p][j + q];
          mx += w * u, my += w * v, xx += w * u * u, yy += w * v * v, xy += w * u * v;
        }
      const double vx = std::max(0.0, xx - mx * mx), vy = std::max(0.0, yy - my * my), cov = xy - mx * my;
      sum += ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    }
  return sum / static_cast<double>(count);
}

TEST(SsimTorchmetrics, MatchesTheWindowSumsOnClampedInputs) {
  torch::manual_seed(3);
  const torch::Tensor preds = torch::rand({2, 3, 13, 16}, torch::kFloat64) * 2.4 - 1.2;  // partly outside [-1, 1]
  const torch::Tensor target = (preds * 0.6 + 0.3 * torch::randn({2, 3, 13, 16}, torch::kFloat64)).clamp(-1.3, 1.3);
  const torch::Tensor got = eval::ssim_torchmetrics(preds, target, -1.0, 1.0);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2}));
  for (int64_t b = 0; b < 2; ++b) {
    double expected = 0;
    for (int64_t c = 0; c < 3; ++c) expected += hand_ssim(preds[b][c].clamp(-1, 1), target[b][c].clamp(-1, 1), 2.0) / 3;
    EXPECT_NEAR(got[b].item<double>(), expected, 1e-12) << b;
  }
}

TEST(SsimTorchmetrics, ConstantImagesLeaveTheLuminanceTermAndIsNotTheScikitImageNumber) {
  const double a = 0.2, b = -0.4, c1 = std::pow(0.01 * 2.0, 2);
  const double got = eval::ssim_torchmetrics(torch::full({1, 3, 12, 12}, a, torch::kFloat64), torch::full({1, 3, 12, 12}, b, torch::kFloat64), -1, 1).item<double>();
  EXPECT_NEAR(got, (2 * a * b + c1) / (a * a + b * b + c1), 1e-12);
  const torch::Tensor x = torch::rand({1, 3, 12, 12}) * 2 - 1;
  EXPECT_NEAR(eval::ssim_torchmetrics(x, x, -1, 1).item<double>(), 1.0, 1e-12);
  // The same two constant images in 8 bit, as scikit-image scores them: another number.
  const io::Image ia = gray_image(12, 12, [](int64_t, int64_t) { return uint8_t(153); });  // (0.2 + 1) * 127.5
  const io::Image ib = gray_image(12, 12, [](int64_t, int64_t) { return uint8_t(77); });   // (-0.4 + 1) * 127.5 - 0.5
  EXPECT_GT(std::abs(eval::ssim(ia, ib) - got), 0.1);
}

std::string write_eval_images(const std::string& name, int64_t resolution) {
  const std::string root = scratch_dir(name);
  torch::manual_seed(8);
  for (const char* cls : {"zebra", "ant"})
    for (int i = 0; i < (std::string(cls) == "ant" ? 2 : 3); ++i) {
      fs::create_directories(root + "/" + cls);
      io::Image im;
      im.height = resolution + 8, im.width = resolution + 20;
      // smooth colours plus some noise: reconstructions of very different quality
      const torch::Tensor base = torch::rand({1, 1, 3}) * 200 + torch::linspace(0, 40, im.width).view({1, -1, 1});
      const torch::Tensor t = (base + torch::rand({im.height, im.width, 3}) * 20 * i).clamp(0, 255).to(torch::kUInt8).contiguous();
      im.rgb.assign(t.data_ptr<uint8_t>(), t.data_ptr<uint8_t>() + t.numel());
      io::write_png(root + "/" + cls + "/" + std::to_string(i) + ".png", im);
    }
  return root;
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::stringstream fields(line);
    for (std::string cell; std::getline(fields, cell, ',');) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.push_back("");
    rows.push_back(cells);
  }
  return rows;
}

std::vector<std::string> model_args(const std::string& root, const std::string& out, int64_t resolution) {
  return {"eval", "--config", fixture("autoencoder/config.json"), "--weights", fixture("autoencoder/weights.safetensors"), "--data",
          root, "--output", out, "--resolution", std::to_string(resolution), "--batch-size", "2", "--threads", "2"};
}

TEST(TokenizerEval, ItsFilesAgreeWithTheSavedImagesAndWithVavaeFid) {
  const int64_t resolution = config::load_autoencoder_config(fixture("autoencoder/config.json")).resolution;
  const std::string root = write_eval_images("eval_images", resolution), out = scratch_dir("eval_out");
  const std::string inception = inception_fixture_weights_file();
  auto args = model_args(root, out, resolution);
  for (const std::string& a : std::vector<std::string>{"--worst", "3", "--lpips", fixture("lpips/weights.safetensors"), "--inception", inception})
    args.push_back(a);
  const ProcessResult r = run_vavae(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("SSIM (torchmetrics, [-1, 1])"), std::string::npos) << r.out;

  const auto rows = read_csv(out + "/metrics.csv");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"index", "item", "label", "psnr", "ssim_torchmetrics", "ssim_skimage", "lpips"}));
  const std::vector<std::string> order{"ant/0.png", "ant/1.png", "zebra/0.png", "zebra/1.png", "zebra/2.png"};  // ImageFolder's
  std::vector<double> psnr, ssim_tm, lpips;
  std::vector<std::pair<double, size_t>> by_psnr;
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& row = rows[i + 1];
    ASSERT_EQ(row.size(), 7u);
    EXPECT_EQ(row[1], root + "/" + order[i]);
    EXPECT_EQ(row[2], i < 2 ? "0" : "1");
    const io::Image ref = io::read_image(out + "/ref_images/ref_image_rank_0_" + std::to_string(i) + ".png");
    const io::Image dec = io::read_image(out + "/decoded_images/decoded_image_rank_0_" + std::to_string(i) + ".png");
    // The reference PNG is the transformed original, saved as upstream saves it.
    const io::Image expected_ref = eval::to_upstream_8bit(eval::evaluation_transform(io::read_image(root + "/" + order[i]), resolution).unsqueeze(0))[0];
    EXPECT_EQ(ref.rgb, expected_ref.rgb) << i;
    EXPECT_NEAR(std::stod(row[3]), eval::psnr(ref, dec), 1e-6) << i;
    EXPECT_NEAR(std::stod(row[5]), eval::ssim(ref, dec), 1e-7) << i;
    psnr.push_back(std::stod(row[3]));
    ssim_tm.push_back(std::stod(row[4]));
    lpips.push_back(std::stod(row[6]));
    by_psnr.emplace_back(psnr.back(), i);
  }
  // Upstream averages SSIM and LPIPS per batch (here 2, 2, 1 images), then over batches.
  auto batch_mean = [](const std::vector<double>& v) { return ((v[0] + v[1]) / 2 + (v[2] + v[3]) / 2 + v[4]) / 3; };
  const nlohmann::json summary = nlohmann::json::parse(read_file(out + "/summary.json"));
  EXPECT_NEAR(summary.at("psnr").get<double>(), (psnr[0] + psnr[1] + psnr[2] + psnr[3] + psnr[4]) / 5, 1e-6);
  EXPECT_NEAR(summary.at("ssim_torchmetrics").get<double>(), batch_mean(ssim_tm), 1e-7);
  EXPECT_NEAR(summary.at("lpips").get<double>(), batch_mean(lpips), 1e-7);
  EXPECT_TRUE(summary.at("left_out").empty());
  EXPECT_EQ(summary.at("images").get<int64_t>(), 5);

  // rFID is the FID of the two saved folders.
  const ProcessResult fid = run_vavae({"fid", out + "/ref_images", out + "/decoded_images", "--inception", inception, "--threads", "2"});
  ASSERT_EQ(fid.code, 0) << fid.err;
  const double folder_fid = std::stod(fid.out.substr(fid.out.rfind("FID ") + 4));
  EXPECT_NEAR(summary.at("rfid").get<double>(), folder_fid, 1e-4 * std::max(1.0, folder_fid));

  // worst.png: the three lowest-PSNR references above their reconstructions, worst first.
  std::sort(by_psnr.begin(), by_psnr.end());
  std::vector<std::vector<io::Image>> grid(2);
  for (size_t k = 0; k < 3; ++k) {
    const std::string i = std::to_string(by_psnr[k].second);
    grid[0].push_back(io::read_image(out + "/ref_images/ref_image_rank_0_" + i + ".png"));
    grid[1].push_back(io::read_image(out + "/decoded_images/decoded_image_rank_0_" + i + ".png"));
  }
  EXPECT_EQ(io::read_image(out + "/worst.png").rgb, io::make_grid(grid).rgb);
}

TEST(TokenizerEval, WithoutWeightsItReportsWhatItLeftOut) {
  const int64_t resolution = config::load_autoencoder_config(fixture("autoencoder/config.json")).resolution;
  const std::string root = write_eval_images("eval_images_bare", resolution), out = scratch_dir("eval_bare");
  auto args = model_args(root, out, resolution);
  args.push_back("--no-images");
  const ProcessResult r = run_vavae(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("left out: rFID: no Inception weights"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("left out: LPIPS: no LPIPS weights"), std::string::npos) << r.out;
  const nlohmann::json summary = nlohmann::json::parse(read_file(out + "/summary.json"));
  EXPECT_TRUE(summary.at("rfid").is_null());
  EXPECT_TRUE(summary.at("lpips").is_null());
  EXPECT_EQ(summary.at("left_out").size(), 2u);
  EXPECT_GT(summary.at("psnr").get<double>(), 0.0);
  EXPECT_FALSE(fs::exists(out + "/ref_images"));
  EXPECT_EQ(read_csv(out + "/metrics.csv")[1][6], "") << "no LPIPS value is invented";
}

TEST(TokenizerEval, TheModeIsDeterministicAndSamplesFollowTheSeed) {
  const int64_t resolution = config::load_autoencoder_config(fixture("autoencoder/config.json")).resolution;
  const std::string root = write_eval_images("eval_images_seed", resolution);
  auto csv_of = [&](const std::vector<std::string>& extra) {
    const std::string out = scratch_dir("eval_seed");
    auto args = model_args(root, out, resolution);
    args.push_back("--no-images");
    args.insert(args.end(), extra.begin(), extra.end());
    const ProcessResult r = run_vavae(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return read_file(out + "/metrics.csv");
  };
  EXPECT_EQ(csv_of({"--posterior", "mode", "--seed", "1"}), csv_of({"--posterior", "mode", "--seed", "2"}));
  EXPECT_EQ(csv_of({"--seed", "1"}), csv_of({"--seed", "1"}));
  EXPECT_NE(csv_of({"--seed", "1"}), csv_of({"--seed", "2"}));
}

// Two ranks split the images and come to one process's numbers (the posterior mode: no noise).
TEST(TokenizerEval, TwoRanksGiveOneProcesssResult) {
  const int64_t resolution = config::load_autoencoder_config(fixture("autoencoder/config.json")).resolution;
  const std::string root = write_eval_images("eval_images_ranks", resolution), inception = inception_fixture_weights_file();
  auto run = [&](const std::string& name, const std::vector<std::string>& extra) {
    const std::string out = scratch_dir(name);
    auto args = model_args(root, out, resolution);
    for (const std::string& a : std::vector<std::string>{"--posterior", "mode", "--worst", "3", "--inception", inception}) args.push_back(a);
    args.insert(args.end(), extra.begin(), extra.end());
    const ProcessResult r = run_vavae(args, timeout(300));
    EXPECT_EQ(r.code, 0) << r.err;
    return out;
  };
  const std::string one = run("eval_ranks_one", {}), two = run("eval_ranks_two", {"--nproc", "2"});
  const auto a = read_csv(one + "/metrics.csv"), b = read_csv(two + "/metrics.csv");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 1; i < a.size(); ++i) {
    EXPECT_EQ(a[i][1], b[i][1]);
    for (size_t c = 3; c <= 5; ++c) EXPECT_NEAR(std::stod(a[i][c]), std::stod(b[i][c]), 1e-5) << "row " << i << " column " << c;
  }
  const auto sa = nlohmann::json::parse(read_file(one + "/summary.json")), sb = nlohmann::json::parse(read_file(two + "/summary.json"));
  EXPECT_NEAR(sa.at("psnr").get<double>(), sb.at("psnr").get<double>(), 1e-5);
  EXPECT_NEAR(sa.at("ssim_skimage").get<double>(), sb.at("ssim_skimage").get<double>(), 1e-7);
  EXPECT_NEAR(sa.at("rfid").get<double>(), sb.at("rfid").get<double>(), 1e-3 * std::max(1.0, sa.at("rfid").get<double>()));
  EXPECT_EQ(io::read_image(one + "/worst.png").rgb, io::read_image(two + "/worst.png").rgb);
  // Rank 1's images carry its rank, as upstream names them: items 1 and 3.
  EXPECT_TRUE(fs::exists(two + "/decoded_images/decoded_image_rank_1_1.png"));
  EXPECT_FALSE(fs::exists(two + "/decoded_images/decoded_image_rank_1_2.png"));
}

}  // namespace
}  // namespace vavae::test
