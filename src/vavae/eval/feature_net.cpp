#include "vavae/eval/feature_net.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "vavae/common/error.h"
#include "vavae/common/progress.h"
#include "vavae/data/loader.h"
#include "vavae/io/safetensors.h"
#include "vavae/io/weights.h"
#include "vavae/train/optimizer_step.h"

namespace vavae::eval {
namespace {

// conv (stride) -> GroupNorm -> SiLU -> conv -> GroupNorm -> SiLU, appended to `net`.
void add_stage(torch::nn::Sequential& net, int64_t in, int64_t out, int64_t stride) {
  net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1)));
  net->push_back(torch::nn::GroupNorm(8, out));
  net->push_back(torch::nn::SiLU());
  net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)));
  net->push_back(torch::nn::GroupNorm(8, out));
  net->push_back(torch::nn::SiLU());
}

nlohmann::json config_json(const FeatureNetConfig& c) {
  return {{"width", c.width}, {"num_classes", c.num_classes}, {"resolution", c.resolution}, {"pad", c.pad}};
}

// Accuracy over a labelled dataset, centre crops.
double accuracy(FeatureNetImpl& net, const std::string& spec, torch::Device device) {
  data::LoaderConfig lc;
  lc.batch_size = 500, lc.shuffle = false;
  lc.transform.resolution = net.config.resolution, lc.transform.pad = net.config.pad;
  const data::Loader loader(data::open_dataset(spec), lc);
  torch::NoGradGuard no_grad;
  int64_t right = 0, seen = 0;
  for (int64_t i = 0; i < loader.batches_per_epoch(); ++i) {
    const data::Batch b = loader.batch(0, i);
    right += (net.forward(b.images.to(device)).argmax(1).cpu() == b.labels).sum().item<int64_t>();
    seen += b.labels.size(0);
  }
  return seen ? static_cast<double>(right) / static_cast<double>(seen) : 0.0;
}

}  // namespace

FeatureNetImpl::FeatureNetImpl(const FeatureNetConfig& c) : config(c) {
  const int64_t w = c.width;
  torch::nn::Sequential layers;
  add_stage(layers, 3, w, 1);
  add_stage(layers, w, 2 * w, 2);
  add_stage(layers, 2 * w, 4 * w, 2);
  body = register_module("body", layers);
  head = register_module("head", torch::nn::Linear(4 * w, c.num_classes));
}

torch::Tensor FeatureNetImpl::features(const torch::Tensor& x) { return body->forward(x).mean({2, 3}); }

FeatureNetResult train_feature_net(const FeatureNetTraining& o, torch::Device device) {
  torch::manual_seed(o.seed);
  data::LoaderConfig lc;
  lc.batch_size = o.batch_size, lc.seed = o.seed, lc.workers = 2;
  lc.transform.resolution = o.net.resolution, lc.transform.pad = std::max<int64_t>(o.net.pad, 2);
  lc.transform.random_crop = true, lc.transform.horizontal_flip = true;
  // Training pads a little more than evaluation and crops at random: shifts by up to 2 pixels.
  data::Loader loader(data::open_dataset(o.data), lc);
  FeatureNetConfig evaluation = o.net;
  FeatureNet net(o.net);
  net->to(device);
  net->train();
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(o.lr));
  std::cout << "feature network: " << loader.dataset().describe() << ", " << o.steps << " steps of " << o.batch_size << std::endl;
  Progress progress(o.steps);
  loader.start(0, 0);
  FeatureNetResult r;
  for (int64_t step = 1; step <= o.steps; ++step) {
    const double factor = 0.5 * (1 + std::cos(M_PI * static_cast<double>(step - 1) / static_cast<double>(o.steps)));
    static_cast<torch::optim::AdamOptions&>(optimizer.param_groups()[0].options()).lr(o.lr * factor);
    const data::Batch b = loader.next();
    // The loader pads by max(pad, 2) before its random crop at the evaluation resolution.
    const torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(b.images.to(device)), b.labels.to(device));
    optimizer.zero_grad();
    loss.backward();
    train::adam_step(optimizer);
    if (step == 1) r.first_loss = loss.item<double>();
    r.last_loss = loss.item<double>();
    if (step % 100 == 0 || step == o.steps) {
      std::ostringstream v;
      v << "loss " << std::fixed << std::setprecision(4) << r.last_loss;
      progress.report(step, step * o.batch_size, v.str());
    }
  }
  net->eval();
  if (!o.test.empty()) r.test_accuracy = accuracy(*net, o.test, device);
  std::filesystem::create_directories(o.output);
  r.path = (std::filesystem::path(o.output) / "feature_net.safetensors").string();
  io::write_safetensors(r.path, io::state_dict(*net),
                        {{"vavae_feature_net", config_json(evaluation).dump()}, {"data", o.data}, {"test_accuracy", std::to_string(r.test_accuracy)}});
  return r;
}

FeatureNet load_feature_net(const std::string& path, torch::Device device) {
  const io::SafetensorsReader reader(path);
  const auto meta = reader.metadata().find("vavae_feature_net");
  if (meta == reader.metadata().end()) throw Error(path + ": not a feature network (no 'vavae_feature_net' metadata; make one with vavae train-feature-net)");
  FeatureNetConfig c;
  try {
    const nlohmann::json j = nlohmann::json::parse(meta->second);
    c.width = j.at("width"), c.num_classes = j.at("num_classes"), c.resolution = j.at("resolution"), c.pad = j.at("pad");
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": metadata 'vavae_feature_net' is malformed: " + e.what());
  }
  if (c.width <= 0 || c.width % 8 != 0 || c.width > 4096 || c.num_classes <= 0 || c.resolution <= 0 || c.pad < 0)
    throw Error(path + ": metadata 'vavae_feature_net' holds an impossible config: " + meta->second);
  FeatureNet net(c);
  io::load_into(*net, io::read_weights(path));
  net->to(device);
  net->eval();
  return net;
}

torch::Tensor feature_net_features(FeatureNetImpl& net, const std::vector<io::Image>& images, int64_t batch_size, torch::Device device) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (size_t first = 0; first < images.size(); first += static_cast<size_t>(batch_size)) {
    std::vector<io::Image> batch;
    for (size_t i = first; i < std::min(images.size(), first + static_cast<size_t>(batch_size)); ++i)
      batch.push_back(images[i].height == net.config.resolution && images[i].width == net.config.resolution
                          ? images[i]  // decoded at the padded size already
                          : io::center_crop_resize(io::pad(images[i], net.config.pad), net.config.resolution));
    out.push_back(net.features(io::images_to_tensor(batch).to(device)).cpu().to(torch::kFloat64));
  }
  return torch::cat(out);
}

}  // namespace vavae::eval
