#include "vavae/nn/inception.h"

#include "vavae/common/error.h"
#include "vavae/io/weights.h"

namespace vavae::nn {
namespace {

namespace F = torch::nn::functional;

// pytorch-fid's average pools leave the zero padding out of the divisor (TensorFlow's semantics).
torch::Tensor avg_pool_3x3_exclusive(const torch::Tensor& x) {
  return F::avg_pool2d(x, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
}

// BasicConv2d's constructor through a function: brace lists do not pass through ModuleHolder.
BasicConv2d conv_bn(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride = {1, 1},
                    std::vector<int64_t> padding = {0, 0}) {
  return BasicConv2d(std::make_shared<BasicConv2dImpl>(in, out, std::move(kernel), std::move(stride), std::move(padding)));
}

torch::Tensor max_pool_3x3_s2(const torch::Tensor& x) { return F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2)); }

struct InceptionAImpl : torch::nn::Module {  // FIDInceptionA
  InceptionAImpl(int64_t in, int64_t pool_features)
      : b1(register_module("branch1x1", conv_bn(in, 64, {1, 1}))),
        b5_1(register_module("branch5x5_1", conv_bn(in, 48, {1, 1}))),
        b5_2(register_module("branch5x5_2", conv_bn(48, 64, {5, 5}, {1, 1}, {2, 2}))),
        d1(register_module("branch3x3dbl_1", conv_bn(in, 64, {1, 1}))),
        d2(register_module("branch3x3dbl_2", conv_bn(64, 96, {3, 3}, {1, 1}, {1, 1}))),
        d3(register_module("branch3x3dbl_3", conv_bn(96, 96, {3, 3}, {1, 1}, {1, 1}))),
        pool(register_module("branch_pool", conv_bn(in, pool_features, {1, 1}))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::cat({b1(x), b5_2(b5_1(x)), d3(d2(d1(x))), pool(avg_pool_3x3_exclusive(x))}, 1);
  }
  BasicConv2d b1, b5_1, b5_2, d1, d2, d3, pool;
};
TORCH_MODULE(InceptionA);

struct InceptionBImpl : torch::nn::Module {  // torchvision InceptionB (Mixed_6a)
  explicit InceptionBImpl(int64_t in)
      : b3(register_module("branch3x3", conv_bn(in, 384, {3, 3}, {2, 2}))),
        d1(register_module("branch3x3dbl_1", conv_bn(in, 64, {1, 1}))),
        d2(register_module("branch3x3dbl_2", conv_bn(64, 96, {3, 3}, {1, 1}, {1, 1}))),
        d3(register_module("branch3x3dbl_3", conv_bn(96, 96, {3, 3}, {2, 2}))) {}
  torch::Tensor forward(const torch::Tensor& x) { return torch::cat({b3(x), d3(d2(d1(x))), max_pool_3x3_s2(x)}, 1); }
  BasicConv2d b3, d1, d2, d3;
};
TORCH_MODULE(InceptionB);

struct InceptionCImpl : torch::nn::Module {  // FIDInceptionC
  InceptionCImpl(int64_t in, int64_t c)
      : b1(register_module("branch1x1", conv_bn(in, 192, {1, 1}))),
        s1(register_module("branch7x7_1", conv_bn(in, c, {1, 1}))),
        s2(register_module("branch7x7_2", conv_bn(c, c, {1, 7}, {1, 1}, {0, 3}))),
        s3(register_module("branch7x7_3", conv_bn(c, 192, {7, 1}, {1, 1}, {3, 0}))),
        d1(register_module("branch7x7dbl_1", conv_bn(in, c, {1, 1}))),
        d2(register_module("branch7x7dbl_2", conv_bn(c, c, {7, 1}, {1, 1}, {3, 0}))),
        d3(register_module("branch7x7dbl_3", conv_bn(c, c, {1, 7}, {1, 1}, {0, 3}))),
        d4(register_module("branch7x7dbl_4", conv_bn(c, c, {7, 1}, {1, 1}, {3, 0}))),
        d5(register_module("branch7x7dbl_5", conv_bn(c, 192, {1, 7}, {1, 1}, {0, 3}))),
        pool(register_module("branch_pool", conv_bn(in, 192, {1, 1}))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::cat({b1(x), s3(s2(s1(x))), d5(d4(d3(d2(d1(x))))), pool(avg_pool_3x3_exclusive(x))}, 1);
  }
  BasicConv2d b1, s1, s2, s3, d1, d2, d3, d4, d5, pool;
};
TORCH_MODULE(InceptionC);

struct InceptionDImpl : torch::nn::Module {  // torchvision InceptionD (Mixed_7a)
  explicit InceptionDImpl(int64_t in)
      : a1(register_module("branch3x3_1", conv_bn(in, 192, {1, 1}))),
        a2(register_module("branch3x3_2", conv_bn(192, 320, {3, 3}, {2, 2}))),
        s1(register_module("branch7x7x3_1", conv_bn(in, 192, {1, 1}))),
        s2(register_module("branch7x7x3_2", conv_bn(192, 192, {1, 7}, {1, 1}, {0, 3}))),
        s3(register_module("branch7x7x3_3", conv_bn(192, 192, {7, 1}, {1, 1}, {3, 0}))),
        s4(register_module("branch7x7x3_4", conv_bn(192, 192, {3, 3}, {2, 2}))) {}
  torch::Tensor forward(const torch::Tensor& x) { return torch::cat({a2(a1(x)), s4(s3(s2(s1(x)))), max_pool_3x3_s2(x)}, 1); }
  BasicConv2d a1, a2, s1, s2, s3, s4;
};
TORCH_MODULE(InceptionD);

struct InceptionEImpl : torch::nn::Module {  // FIDInceptionE_1 (average pool) / _2 (max pool)
  InceptionEImpl(int64_t in, bool max_pool)
      : max_pool(max_pool),
        b1(register_module("branch1x1", conv_bn(in, 320, {1, 1}))),
        t1(register_module("branch3x3_1", conv_bn(in, 384, {1, 1}))),
        t2a(register_module("branch3x3_2a", conv_bn(384, 384, {1, 3}, {1, 1}, {0, 1}))),
        t2b(register_module("branch3x3_2b", conv_bn(384, 384, {3, 1}, {1, 1}, {1, 0}))),
        d1(register_module("branch3x3dbl_1", conv_bn(in, 448, {1, 1}))),
        d2(register_module("branch3x3dbl_2", conv_bn(448, 384, {3, 3}, {1, 1}, {1, 1}))),
        d3a(register_module("branch3x3dbl_3a", conv_bn(384, 384, {1, 3}, {1, 1}, {0, 1}))),
        d3b(register_module("branch3x3dbl_3b", conv_bn(384, 384, {3, 1}, {1, 1}, {1, 0}))),
        pool(register_module("branch_pool", conv_bn(in, 192, {1, 1}))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor t = t1(x), d = d2(d1(x));
    const torch::Tensor pooled = max_pool ? F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(1).padding(1)) : avg_pool_3x3_exclusive(x);
    return torch::cat({b1(x), torch::cat({t2a(t), t2b(t)}, 1), torch::cat({d3a(d), d3b(d)}, 1), pool(pooled)}, 1);
  }
  bool max_pool;
  BasicConv2d b1, t1, t2a, t2b, d1, d2, d3a, d3b, pool;
};
TORCH_MODULE(InceptionE);

// torchvision Inception3 names of the real weight file -> pytorch-fid's block positions.
const std::pair<const char*, const char*> kInception3Names[] = {
    {"Conv2d_1a_3x3.", "blocks.0.0."}, {"Conv2d_2a_3x3.", "blocks.0.1."}, {"Conv2d_2b_3x3.", "blocks.0.2."},
    {"Conv2d_3b_1x1.", "blocks.1.0."}, {"Conv2d_4a_3x3.", "blocks.1.1."}, {"Mixed_5b.", "blocks.2.0."},
    {"Mixed_5c.", "blocks.2.1."},      {"Mixed_5d.", "blocks.2.2."},      {"Mixed_6a.", "blocks.2.3."},
    {"Mixed_6b.", "blocks.2.4."},      {"Mixed_6c.", "blocks.2.5."},      {"Mixed_6d.", "blocks.2.6."},
    {"Mixed_6e.", "blocks.2.7."},      {"Mixed_7a.", "blocks.3.0."},      {"Mixed_7b.", "blocks.3.1."},
    {"Mixed_7c.", "blocks.3.2."}};

}  // namespace

BasicConv2dImpl::BasicConv2dImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                                 std::vector<int64_t> padding) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(1e-3)));
}

torch::Tensor BasicConv2dImpl::forward(const torch::Tensor& x) { return torch::relu(bn(conv(x))); }

FIDInceptionV3Impl::FIDInceptionV3Impl() {
  torch::nn::Sequential b0(conv_bn(3, 32, {3, 3}, {2, 2}), conv_bn(32, 32, {3, 3}), conv_bn(32, 64, {3, 3}, {1, 1}, {1, 1}),
                           torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2)));
  torch::nn::Sequential b1(conv_bn(64, 80, {1, 1}), conv_bn(80, 192, {3, 3}),
                           torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2)));
  torch::nn::Sequential b2(InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64), InceptionB(288), InceptionC(768, 128),
                           InceptionC(768, 160), InceptionC(768, 160), InceptionC(768, 192));
  torch::nn::Sequential b3(InceptionD(768), InceptionE(1280, false), InceptionE(2048, true),
                           torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
  blocks = register_module("blocks", torch::nn::ModuleList(b0, b1, b2, b3));
  eval();
}

std::vector<torch::Tensor> FIDInceptionV3Impl::forward_blocks(const torch::Tensor& images) {
  if (images.dim() != 4 || images.size(1) != 3)
    throw Error("Inception: images must be [N, 3, H, W] in [0, 1], got " + std::to_string(images.dim()) + " dimensions");
  torch::Tensor x = F::interpolate(images, F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{299, 299})
                                               .mode(torch::kBilinear)
                                               .align_corners(false));
  x = 2 * x - 1;
  std::vector<torch::Tensor> out{x};
  for (const auto& block : *blocks) {
    x = block->as<torch::nn::Sequential>()->forward(x);
    out.push_back(x);
  }
  return out;
}

torch::Tensor FIDInceptionV3Impl::forward(const torch::Tensor& images) {
  return forward_blocks(images).back().flatten(1);
}

void load_fid_inception(FIDInceptionV3Impl& model, const std::string& path) {
  io::WeightFile file = io::read_weights(path);
  io::NamedTensors renamed;
  for (auto& [name, t] : file.tensors) {
    // The classifier is not part of the features, and BatchNorm's batch counter means nothing in eval mode.
    if (name.rfind("fc.", 0) == 0 || name.rfind("AuxLogits.", 0) == 0 || io::ends_with(name, "num_batches_tracked")) continue;
    std::string n = name;
    for (const auto& [from, to] : kInception3Names)
      if (n.rfind(from, 0) == 0) {
        n = to + n.substr(std::string(from).size());
        break;
      }
    renamed.emplace_back(n, t);
  }
  file.tensors = renamed;
  io::LoadOptions partial;
  partial.partial = true;
  const io::LoadReport report = io::load_into(model, file, partial);
  if (!report.mismatched.empty()) throw Error(path + ": shape mismatch for " + report.mismatched.front());
  for (const auto& missing : report.missing)
    if (missing.find("num_batches_tracked") == std::string::npos)
      throw Error(path + ": not FID Inception weights: '" + missing + "' is missing (" + std::to_string(report.missing.size()) +
                  " tensors in all)");
  model.eval();
}

}  // namespace vavae::nn
