#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "vavae/data/dataset.h"
#include "vavae/dist/process_group.h"
#include "vavae/io/image.h"
#include "vavae/nn/autoencoder.h"
#include "vavae/nn/inception.h"
#include "vavae/nn/lpips.h"

// A tokenizer judged the way LightningDiT's evaluate_tokenizer.py judges one: rFID, PSNR, SSIM and
// LPIPS over an image folder, plus what a person needs to look further: per-image values, the
// worst reconstructions and a summary.
namespace vavae::eval {

// evaluate_tokenizer.py's transform on torchvision 0.17 tensors: ToTensor, Resize(size) (shorter
// side to size, the other int(size * long / short), bilinear with antialias), CenterCrop(size)
// (offsets rounded half to even, as Python's round), Normalize(0.5, 0.5). [3, size, size] float32.
torch::Tensor evaluation_transform(const io::Image& image, int64_t size);

// As evaluate_tokenizer.py turns [-1, 1] tensors into PNGs: clamp(127.5 x + 128, 0, 255) truncated to 8 bit.
std::vector<io::Image> to_upstream_8bit(const torch::Tensor& x);

struct TokenizerEvalOptions {
  int64_t resolution = 256;
  int64_t pad = 0;         // zero padding on every side before the transform
  int64_t batch_size = 8;  // upstream's; the batch means of SSIM and LPIPS are averaged as upstream does
  int64_t limit = 0;       // the first `limit` images (all when 0)
  int64_t worst = 8;       // reconstructions shown in worst.png (lowest PSNR first)
  bool sample_posterior = true;  // upstream encodes with posterior.sample(); false: the mode
  uint64_t seed = 0;
  bool save_images = true;  // ref_images/ and decoded_images/ as upstream names them
  std::string output;       // folder for metrics.csv, summary.json, worst.png and the image folders
};

struct ImageScores {
  std::string item;
  int64_t label = -1;
  double psnr = 0, ssim_torchmetrics = 0, ssim_skimage = 0;
  double lpips = std::numeric_limits<double>::quiet_NaN();  // NaN without LPIPS weights
};

struct TokenizerEvalResult {
  std::vector<ImageScores> images;
  double psnr = 0;               // mean over images of 20 log10(255 / RMSE) on the 8-bit PNG pixels
  double ssim_torchmetrics = 0;  // mean over batches of the batch mean (upstream's number)
  double ssim_skimage = 0;       // mean over images, 8-bit images with data range 255
  double lpips = std::numeric_limits<double>::quiet_NaN();  // mean over batches of the batch mean
  double rfid = std::numeric_limits<double>::quiet_NaN();   // reference vs decoded 8-bit images
  std::vector<std::string> left_out;  // metrics not computed, and why
  io::Image worst;                    // originals above their reconstructions, worst first
  double seconds = 0;
};

// Encodes and decodes every image of `dataset` and scores it; `lpips` and `inception` may be
// null (their metrics are then listed in left_out). Writes the image folders when asked. With a
// group of several ranks each takes every size()-th image (its PNGs named with its rank, as
// upstream's) and every rank returns the whole result.
TokenizerEvalResult evaluate_tokenizer(nn::AutoencoderKLImpl& autoencoder, const data::Dataset& dataset,
                                       const TokenizerEvalOptions& options, torch::Device device, nn::LPIPSImpl* lpips,
                                       nn::FIDInceptionV3Impl* inception, dist::Group* group = nullptr);

// metrics.csv (one row per image), summary.json and worst.png in options.output.
void write_tokenizer_eval(const TokenizerEvalResult& result, const TokenizerEvalOptions& options, const std::string& model,
                          const std::string& data);

// The summary as a table for the terminal.
std::string tokenizer_eval_table(const TokenizerEvalResult& result);

}  // namespace vavae::eval
