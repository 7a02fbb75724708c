#pragma once
#include <torch/torch.h>

#include <string>

// The models' 2-D convolution. Where it pays (fp32 on a CPU with oneDNN's AVX-512 Winograd
// kernels, 3x3 stride 1, at least 16 input and output channels, images of 16x16 or more), it runs
// the Winograd F(4x4, 3x3) algorithm: about half the multiplications of the direct convolution
// LibTorch calls, forward, input gradient and weight gradient alike, at float32 rounding of the
// same function (cuDNN picks Winograd for PyTorch on GPUs the same way). Frozen 3x3 layers (weights
// without gradient, as LPIPS's VGG) on smaller images run oneDNN's direct kernels with their weight
// layout kept between calls. Everything else, bf16 autocast and CUDA included, is
// torch::nn::Conv2d's forward.
namespace vavae::nn {

enum class ConvolutionAlgorithm {
  direct,    // LibTorch's kernels everywhere: bit for bit what PyTorch computes on this CPU
  winograd,  // Winograd where it applies, kept layouts for frozen layers (the default when the build and the CPU have it)
};

// The process-wide choice; VAVAE_CONV=direct|winograd in the environment sets the initial value.
// Asking for winograd where it is unavailable leaves direct in effect.
void set_convolution_algorithm(ConvolutionAlgorithm algorithm);
ConvolutionAlgorithm convolution_algorithm();
// Whether this build has oneDNN and this CPU has its Winograd kernels.
bool winograd_available();
std::string convolution_algorithm_name();

// Layers run in bands of output rows whose input (with its one-row halo) takes at most about this
// many bytes (at least 8 rows): the kernels' scratchpad is about 4.5x the input they see, 150 MB
// for a whole f16d32 layer at 256 px. Results agree with one band to float32 rounding.
constexpr int64_t kDefaultWinogradBandBytes = int64_t{4} << 20;
void set_winograd_band_bytes(int64_t bytes);
int64_t winograd_band_bytes();

// Winograd convolution, 3x3, stride 1, padding 1: x [N, C, H, W], weight [O, C, 3, 3], bias [O]
// or undefined -> [N, O, H, W], differentiable in all three. Throws where winograd_applies is false.
torch::Tensor winograd_conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
bool winograd_applies(const torch::Tensor& x, const torch::Tensor& weight);

// torch::nn::Conv2d with the parameters, names and options of LibTorch's, whose forward takes the
// Winograd path where winograd_applies and the module is a 3x3 stride-1 padding-1 convolution.
class Conv2dImpl : public torch::nn::Conv2dImpl {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(Conv2d);

}  // namespace vavae::nn
