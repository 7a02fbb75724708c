#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

// The InceptionV3 that FID uses, as pytorch-fid builds it (torchvision's Inception v3 with the FID
// blocks of the TensorFlow 2015-12-05 graph): four blocks up to the 2048-d average pool, under
// pytorch-fid's state-dict names (blocks.<b>.<i>.…).
namespace vavae::nn {

// Conv2d without bias -> BatchNorm2d (eps 1e-3, eval statistics) -> ReLU.
struct BasicConv2dImpl : torch::nn::Module {
  BasicConv2dImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride = {1, 1},
                  std::vector<int64_t> padding = {0, 0});
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

class FIDInceptionV3Impl : public torch::nn::Module {
 public:
  FIDInceptionV3Impl();
  // [N, 3, H, W] in [0, 1] -> [N, 2048] pool features: bilinear resize to 299 (align_corners
  // false), 2x - 1, the four blocks.
  torch::Tensor forward(const torch::Tensor& images);
  // The intermediate outputs the fixture pins down: x299, block0 .. block3.
  std::vector<torch::Tensor> forward_blocks(const torch::Tensor& images);

  torch::nn::ModuleList blocks;
};
TORCH_MODULE(FIDInceptionV3);

// Loads pytorch-fid's weights: its own names (blocks.*) or the pt_inception-2015-12-05 file's
// torchvision Inception3 names (Conv2d_1a_3x3.*, Mixed_5b.*, ...; fc.* is not used). Every
// parameter and statistic must be present; num_batches_tracked may be absent.
void load_fid_inception(FIDInceptionV3Impl& model, const std::string& path);

}  // namespace vavae::nn
