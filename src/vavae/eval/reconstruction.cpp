#include "vavae/eval/reconstruction.h"

#include <algorithm>
#include <iostream>

#include "vavae/common/error.h"
#include "vavae/eval/metrics.h"

namespace vavae::eval {

EvalResult evaluate(nn::AutoencoderKL& autoencoder, const data::Dataset& dataset, const config::DataSplitConfig& split,
                    int64_t limit, int64_t grid_images, int64_t batch_size, torch::Device device, nn::LPIPSImpl* lpips,
                    const ValidationLosses& losses) {
  torch::NoGradGuard no_grad;
  const bool was_training = autoencoder->is_training();
  autoencoder->eval();
  // Validation measures LPIPS without dropout, as Lightning's evaluation mode does upstream.
  const bool lpips_was_training = lpips && lpips->is_training();
  if (lpips) lpips->eval();
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, static_cast<int64_t>(dataset.size())) : static_cast<int64_t>(dataset.size());
  EvalResult r;
  double lpips_sum = 0;
  int64_t loss_batches = 0;
  std::vector<io::Image> grid_in, grid_out;
  for (int64_t start = 0; start < n; start += batch_size) {
    std::vector<io::Image> inputs;
    for (int64_t i = start; i < std::min(n, start + batch_size); ++i) {
      try {
        inputs.push_back(io::center_crop_resize(io::pad(dataset.image(static_cast<size_t>(i)), split.pad), split.resolution));
      } catch (const Error& e) {
        std::cerr << "warning: skipping unreadable image: " << e.what() << "\n";
      }
    }
    if (inputs.empty()) continue;
    const torch::Tensor x = io::images_to_tensor(inputs).to(device);
    const torch::Tensor recon = autoencoder->decode(autoencoder->encode(x).mode());
    r.l1 += (recon - x).abs().mean({1, 2, 3}).sum().item<double>();
    if (lpips) lpips_sum += lpips->forward(x, recon).sum().item<double>();
    if (losses) {
      for (const auto& [k, v] : losses(x)) r.losses[k] += v;
      ++loss_batches;
    }
    const auto outputs = io::tensor_to_images(recon);
    r.psnr += psnr_each(inputs, outputs).clamp_max(100.0).sum().item<double>();
    r.ssim += ssim_each(inputs, outputs).sum().item<double>();
    for (size_t i = 0; i < inputs.size() && static_cast<int64_t>(grid_in.size()) < grid_images; ++i)
      grid_in.push_back(inputs[i]), grid_out.push_back(outputs[i]);
    r.images += static_cast<int64_t>(inputs.size());
  }
  if (r.images == 0) throw Error(dataset.describe() + ": no readable validation images");
  r.psnr /= static_cast<double>(r.images);
  r.ssim /= static_cast<double>(r.images);
  r.l1 /= static_cast<double>(r.images);
  if (lpips) r.lpips = lpips_sum / static_cast<double>(r.images);
  for (auto& [k, v] : r.losses) v /= static_cast<double>(loss_batches);
  r.grid = io::make_grid({grid_in, grid_out});
  if (was_training) autoencoder->train();
  if (lpips_was_training) lpips->train();
  return r;
}

}  // namespace vavae::eval
