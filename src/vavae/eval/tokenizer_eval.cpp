#include "vavae/eval/tokenizer_eval.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/common/progress.h"
#include "vavae/dist/process_group.h"
#include "vavae/eval/fid.h"
#include "vavae/eval/metrics.h"
#include "vavae/io/files.h"

namespace vavae::eval {
namespace {

namespace fs = std::filesystem;

double mean_of(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? std::numeric_limits<double>::quiet_NaN() : sum / static_cast<double>(values.size());
}

// A CSV or JSON number: NaN (a metric left out) and infinity (identical images) as text.
std::string csv_number(double v) {
  if (std::isnan(v)) return "";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream out;
  out << std::setprecision(9) << v;
  return out.str();
}

nlohmann::json json_number(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

std::string csv_field(const std::string& s) {  // quoted when it holds a comma, quote or line break
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// The `keep` lowest-PSNR images seen so far, lowest first.
class WorstImages {
 public:
  explicit WorstImages(size_t keep) : keep_(keep) {}
  void offer(double psnr, const io::Image& reference, const io::Image& decoded) {
    if (keep_ == 0 || (entries_.size() == keep_ && psnr >= entries_.back().psnr)) return;
    const auto at = std::upper_bound(entries_.begin(), entries_.end(), psnr, [](double p, const Entry& e) { return p < e.psnr; });
    entries_.insert(at, {psnr, reference, decoded});
    if (entries_.size() > keep_) entries_.pop_back();
  }
  // Every rank's entries on every rank, merged (the images of one run are all size x size).
  void gather(dist::Group& group, int64_t size) {
    if (!group.distributed() || keep_ == 0) return;
    const int64_t ranks = group.size(), keep = static_cast<int64_t>(keep_), pixels = size * size * 3;
    torch::Tensor psnrs = torch::zeros({ranks, keep}, torch::kFloat64), counts = torch::zeros({ranks}, torch::kFloat64);
    torch::Tensor images = torch::zeros({ranks, keep, 2, pixels}, torch::kFloat32);
    counts[group.rank()] = static_cast<double>(entries_.size());
    for (size_t k = 0; k < entries_.size(); ++k) {
      psnrs[group.rank()][static_cast<int64_t>(k)] = entries_[k].psnr;
      for (int side = 0; side < 2; ++side) {
        const auto& rgb = (side == 0 ? entries_[k].reference : entries_[k].decoded).rgb;
        images[group.rank()][static_cast<int64_t>(k)][side].copy_(torch::tensor(std::vector<float>(rgb.begin(), rgb.end())));
      }
    }
    std::vector<torch::Tensor> buffers{psnrs, counts, images};
    group.all_reduce_sum(buffers);
    entries_.clear();
    for (int64_t r = 0; r < ranks; ++r)
      for (int64_t k = 0; k < static_cast<int64_t>(buffers[1][r].item<double>()); ++k) {
        io::Image pair[2];
        for (int side = 0; side < 2; ++side) {
          const torch::Tensor u8 = buffers[2][r][k][side].to(torch::kUInt8).contiguous();
          pair[side].height = pair[side].width = size;
          pair[side].rgb.assign(u8.data_ptr<uint8_t>(), u8.data_ptr<uint8_t>() + pixels);
        }
        offer(buffers[0][r][k].item<double>(), pair[0], pair[1]);
      }
  }

  io::Image grid() const {
    if (entries_.empty()) return {};
    std::vector<std::vector<io::Image>> rows(2);
    for (const auto& e : entries_) rows[0].push_back(e.reference), rows[1].push_back(e.decoded);
    return io::make_grid(rows);
  }

 private:
  struct Entry {
    double psnr;
    io::Image reference, decoded;
  };
  size_t keep_;
  std::vector<Entry> entries_;
};

}  // namespace

torch::Tensor evaluation_transform(const io::Image& image, int64_t size) {
  if (size <= 0) throw Error("resolution must be positive, got " + std::to_string(size));
  torch::Tensor x = io::to_unit_tensor(image).unsqueeze(0);
  const int64_t h = image.height, w = image.width;
  const int64_t short_side = std::min(h, w), long_side = std::max(h, w);
  if (short_side != size) {
    const int64_t other = size * long_side / short_side;
    const std::vector<int64_t> target = h <= w ? std::vector<int64_t>{size, other} : std::vector<int64_t>{other, size};
    x = torch::nn::functional::interpolate(
        x, torch::nn::functional::InterpolateFuncOptions().size(target).mode(torch::kBilinear).align_corners(false).antialias(true));
  }
  const int64_t top = static_cast<int64_t>(std::nearbyint(static_cast<double>(x.size(2) - size) / 2.0));
  const int64_t left = static_cast<int64_t>(std::nearbyint(static_cast<double>(x.size(3) - size) / 2.0));
  x = x.slice(2, top, top + size).slice(3, left, left + size);
  return ((x - 0.5f) / 0.5f).squeeze(0).contiguous();
}

std::vector<io::Image> to_upstream_8bit(const torch::Tensor& x) {
  const torch::Tensor u8 = torch::clamp(127.5f * x.detach().to(torch::kFloat32) + 128.0f, 0, 255)
                               .to(torch::kUInt8)
                               .permute({0, 2, 3, 1})
                               .contiguous()
                               .to(torch::kCPU);
  std::vector<io::Image> images(static_cast<size_t>(x.size(0)));
  const int64_t pixels = x.size(2) * x.size(3) * 3;
  for (size_t i = 0; i < images.size(); ++i) {
    images[i].height = x.size(2);
    images[i].width = x.size(3);
    const uint8_t* from = u8.data_ptr<uint8_t>() + static_cast<int64_t>(i) * pixels;
    images[i].rgb.assign(from, from + pixels);
  }
  return images;
}

TokenizerEvalResult evaluate_tokenizer(nn::AutoencoderKLImpl& autoencoder, const data::Dataset& dataset,
                                       const TokenizerEvalOptions& o, torch::Device device, nn::LPIPSImpl* lpips,
                                       nn::FIDInceptionV3Impl* inception, dist::Group* group) {
  dist::Group single;
  dist::Group& ranks = group ? *group : single;
  if (o.batch_size <= 0) throw Error("eval: the batch size must be positive, got " + std::to_string(o.batch_size));
  const int64_t n = o.limit > 0 ? std::min<int64_t>(o.limit, static_cast<int64_t>(dataset.size())) : static_cast<int64_t>(dataset.size());
  if (n == 0) throw Error(dataset.describe() + ": no images to evaluate");
  if (n < ranks.size()) throw Error("eval: " + std::to_string(n) + " images cannot keep " + std::to_string(ranks.size()) + " ranks busy");
  if (inception && n < 2) throw Error("eval: rFID needs at least two images, got " + std::to_string(n));
  const std::string ref_dir = (fs::path(o.output) / "ref_images").string();
  const std::string decoded_dir = (fs::path(o.output) / "decoded_images").string();
  if (o.save_images) fs::create_directories(ref_dir), fs::create_directories(decoded_dir);
  // This rank's images: every size()-th from its rank on (DistributedSampler without padding).
  std::vector<int64_t> mine;
  for (int64_t i = ranks.rank(); i < n; i += ranks.size()) mine.push_back(i);
  const int64_t count = static_cast<int64_t>(mine.size());

  torch::NoGradGuard no_grad;
  autoencoder.eval();
  if (lpips) lpips->eval();
  at::Generator noise = at::detail::createCPUGenerator(o.seed + static_cast<uint64_t>(ranks.rank()));
  TokenizerEvalResult r;
  if (!lpips) r.left_out.push_back("LPIPS: no LPIPS weights (--lpips)");
  if (!inception) r.left_out.push_back("rFID: no Inception weights (--inception pt_inception-2015-12-05-6726825d.pth)");
  // Per image, in dataset order (rows of other ranks stay 0 until the reduction): PSNR, both SSIMs, LPIPS.
  torch::Tensor scores = torch::zeros({n, 4}, torch::kFloat64);
  auto table = scores.accessor<double, 2>();
  std::vector<double> ssim_batches, lpips_batches;
  FeatureSums ref_features, decoded_features;
  WorstImages worst(static_cast<size_t>(std::max<int64_t>(0, o.worst)));
  Progress progress((count + o.batch_size - 1) / o.batch_size);
  for (int64_t start = 0, batch = 0; start < count; start += o.batch_size, ++batch) {
    const int64_t end = std::min(count, start + o.batch_size);
    std::vector<torch::Tensor> inputs;
    for (int64_t k = start; k < end; ++k)
      inputs.push_back(evaluation_transform(io::pad(dataset.image(static_cast<size_t>(mine[static_cast<size_t>(k)])), o.pad), o.resolution));
    const torch::Tensor x = torch::stack(inputs).to(device);
    const nn::DiagonalGaussian posterior = autoencoder.encode(x);
    const torch::Tensor decoded = autoencoder.decode(o.sample_posterior ? posterior.sample(noise) : posterior.mode());

    const std::vector<io::Image> reference8 = to_upstream_8bit(x), decoded8 = to_upstream_8bit(decoded);
    const torch::Tensor ssim_tm = ssim_torchmetrics(decoded, x, -1.0, 1.0);
    ssim_batches.push_back(ssim_tm.mean().item<double>());
    torch::Tensor lpips_values;
    if (lpips) {
      lpips_values = lpips->forward(decoded, x).flatten().to(torch::kCPU, torch::kFloat64);
      lpips_batches.push_back(lpips_values.mean().item<double>());
    }
    if (inception) {
      ref_features.add(inception_features(*inception, reference8, device));
      decoded_features.add(inception_features(*inception, decoded8, device));
    }
    const torch::Tensor psnr_values = psnr_each(reference8, decoded8), ssim_values = ssim_each(reference8, decoded8);
    for (int64_t k = start; k < end; ++k) {
      const size_t j = static_cast<size_t>(k - start);
      const int64_t i = mine[static_cast<size_t>(k)];
      table[i][0] = psnr_values[static_cast<int64_t>(j)].item<double>();
      table[i][1] = ssim_tm[static_cast<int64_t>(j)].item<double>();
      table[i][2] = ssim_values[static_cast<int64_t>(j)].item<double>();
      table[i][3] = lpips ? lpips_values[static_cast<int64_t>(j)].item<double>() : std::numeric_limits<double>::quiet_NaN();
      worst.offer(table[i][0], reference8[j], decoded8[j]);
      if (o.save_images) {
        const std::string name = std::to_string(ranks.rank()) + "_" + std::to_string(k) + ".png";  // upstream's names
        io::write_png(ref_dir + "/ref_image_rank_" + name, reference8[j]);
        io::write_png(decoded_dir + "/decoded_image_rank_" + name, decoded8[j]);
      }
    }
    if (ranks.is_root() && ((batch + 1) % 10 == 0 || end == count)) {
      std::ostringstream values;
      values << std::fixed << std::setprecision(3) << "PSNR " << table[mine[static_cast<size_t>(end - 1)]][0] << " | SSIM " << ssim_batches.back();
      progress.report(batch + 1, end * ranks.size(), values.str());
    }
  }
  // Every rank's share together: the table's rows, the batch means as upstream averages them
  // (per rank, then over the ranks), the feature sums and the worst images.
  std::vector<torch::Tensor> reduced{scores};
  ranks.all_reduce_sum(reduced);
  scores = reduced[0];
  table = scores.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    ImageScores s;
    s.item = dataset.item_name(static_cast<size_t>(i));
    s.label = dataset.label(static_cast<size_t>(i));
    s.psnr = table[i][0], s.ssim_torchmetrics = table[i][1], s.ssim_skimage = table[i][2], s.lpips = table[i][3];
    r.images.push_back(std::move(s));
  }
  r.psnr = scores.select(1, 0).mean().item<double>();
  r.ssim_skimage = scores.select(1, 2).mean().item<double>();
  r.ssim_torchmetrics = ranks.sum_across_ranks(mean_of(ssim_batches)) / ranks.size();
  if (lpips) r.lpips = ranks.sum_across_ranks(mean_of(lpips_batches)) / ranks.size();
  if (inception) {
    for (FeatureSums* sums : {&ref_features, &decoded_features}) {
      std::vector<torch::Tensor> parts{sums->sum, sums->outer, sums->count};  // summed in place
      ranks.all_reduce_sum(parts);
    }
    r.rfid = frechet_distance(ref_features.statistics(), decoded_features.statistics());
  }
  worst.gather(ranks, o.resolution);
  r.worst = worst.grid();
  r.seconds = progress.elapsed_seconds();
  return r;
}

void write_tokenizer_eval(const TokenizerEvalResult& r, const TokenizerEvalOptions& o, const std::string& model,
                          const std::string& data) {
  fs::create_directories(o.output);
  io::write_file_atomically((fs::path(o.output) / "metrics.csv").string(), [&](std::ostream& out) {
    out << "index,item,label,psnr,ssim_torchmetrics,ssim_skimage,lpips\n";
    for (size_t i = 0; i < r.images.size(); ++i) {
      const auto& s = r.images[i];
      out << i << "," << csv_field(s.item) << "," << s.label << "," << csv_number(s.psnr) << "," << csv_number(s.ssim_torchmetrics)
          << "," << csv_number(s.ssim_skimage) << "," << csv_number(s.lpips) << "\n";
    }
  });
  nlohmann::json summary = {
      {"model", model},
      {"data", data},
      {"images", r.images.size()},
      {"resolution", o.resolution},
      {"posterior", o.sample_posterior ? "sample" : "mode"},
      {"seed", o.seed},
      {"batch_size", o.batch_size},
      {"rfid", json_number(r.rfid)},
      {"psnr", json_number(r.psnr)},
      {"ssim_torchmetrics", json_number(r.ssim_torchmetrics)},
      {"ssim_skimage", json_number(r.ssim_skimage)},
      {"lpips", json_number(r.lpips)},
      {"left_out", r.left_out},
      {"seconds", r.seconds},
      {"definitions",
       {{"psnr", "mean over images of 20 log10(255 / RMSE) between the 8-bit reference and decoded PNGs"},
        {"ssim_torchmetrics", "torchmetrics StructuralSimilarityIndexMeasure(data_range=(-1, 1)) on the [-1, 1] tensors, "
                              "mean of per-batch means (evaluate_tokenizer.py's SSIM)"},
        {"ssim_skimage", "skimage structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
                         "data_range=255) on the 8-bit images, mean over images"},
        {"lpips", "LPIPS (VGG) of decoded vs input tensors, mean of per-batch means"},
        {"rfid", "FID (pytorch-fid InceptionV3) between the reference and decoded 8-bit images"}}}};
  io::write_file_atomically((fs::path(o.output) / "summary.json").string(), [&](std::ostream& out) { out << summary.dump(2) << "\n"; });
  if (r.worst.height > 0) io::write_png((fs::path(o.output) / "worst.png").string(), r.worst);
}

std::string tokenizer_eval_table(const TokenizerEvalResult& r) {
  std::ostringstream out;
  auto row = [&](const std::string& name, double value, const std::string& unit) {
    out << "  " << std::left << std::setw(30) << name;
    if (std::isnan(value)) out << "left out";
    else out << std::fixed << std::setprecision(4) << value << unit;
    out << "\n";
  };
  out << "  " << r.images.size() << " images\n";
  row("rFID", r.rfid, "");
  row("PSNR", r.psnr, " dB");
  row("SSIM (torchmetrics, [-1, 1])", r.ssim_torchmetrics, "");
  row("SSIM (scikit-image, 8-bit)", r.ssim_skimage, "");
  row("LPIPS", r.lpips, "");
  for (const auto& why : r.left_out) out << "  left out: " << why << "\n";
  return out.str();
}

}  // namespace vavae::eval
