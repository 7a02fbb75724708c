// vavae encode / decode / reconstruct: images <-> latents with a trained autoencoder.
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iomanip>
#include <iostream>

#include "vavae/cli/common.h"
#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/common/runtime.h"
#include "vavae/eval/metrics.h"
#include "vavae/io/files.h"
#include "vavae/io/image.h"
#include "vavae/io/safetensors.h"

namespace vavae::cli {
namespace {

namespace fs = std::filesystem;

struct ImageInput {
  std::string input;
  int64_t resolution = 0;  // 0: the config's
  int64_t batch_size = 8;
};

void add_image_input_options(CLI::App& cmd, ImageInput& in) {
  cmd.add_option("--input", in.input, "an image file or a folder of images")->required();
  cmd.add_option("--resolution", in.resolution, "resize shorter side + centre crop to this size (default: the config's)");
  cmd.add_option("--batch-size", in.batch_size, "images per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
}

// Files and their resolution, validated against the model's downsampling factor.
std::vector<std::string> resolve_images(ImageInput& in, const nn::AutoencoderConfig& config) {
  if (in.resolution == 0) in.resolution = config.resolution;
  if (in.resolution % config.downsample_factor() != 0)
    throw Error("--resolution " + std::to_string(in.resolution) + " is not divisible by the model's downsampling factor " +
                std::to_string(config.downsample_factor()));
  return io::list_images(in.input);
}

std::vector<io::Image> load_batch(const std::vector<std::string>& files, int64_t start, int64_t count, int64_t resolution) {
  std::vector<io::Image> images;
  for (int64_t i = start; i < start + count; ++i) images.push_back(io::center_crop_resize(io::read_image(files[i]), resolution));
  return images;
}

std::string stem(const std::string& path) { return fs::path(path).stem().string(); }

struct Posteriors {
  torch::Tensor mean, logvar, z;
};

// Encodes in batches; z is the posterior mode or a sample drawn from `generator`.
Posteriors encode_all(nn::AutoencoderKL& model, const std::vector<std::string>& files, const ImageInput& in,
                      torch::Device device, bool mode, at::Generator& generator, std::vector<io::Image>* keep_inputs) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> means, logvars, zs;
  for_each_batch(static_cast<int64_t>(files.size()), in.batch_size, [&](int64_t start, int64_t count) {
    std::vector<io::Image> images = load_batch(files, start, count, in.resolution);
    const nn::DiagonalGaussian posterior = model->encode(io::images_to_tensor(images).to(device));
    means.push_back(posterior.mean.cpu());
    logvars.push_back(posterior.logvar.cpu());
    zs.push_back((mode ? posterior.mode() : posterior.sample(generator)).cpu());
    if (keep_inputs) keep_inputs->insert(keep_inputs->end(), images.begin(), images.end());
  });
  return {torch::cat(means), torch::cat(logvars), torch::cat(zs)};
}

torch::Tensor decode_all(nn::AutoencoderKL& model, const torch::Tensor& z, int64_t batch_size, torch::Device device) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for_each_batch(z.size(0), batch_size, [&](int64_t start, int64_t count) {
    out.push_back(model->decode(z.slice(0, start, start + count).to(device)).cpu());
  });
  return torch::cat(out);
}

nlohmann::json file_list(const std::vector<std::string>& files) {
  nlohmann::json names = nlohmann::json::array();
  for (const auto& f : files) names.push_back(fs::path(f).filename().string());
  return names;
}

void run_encode(const ModelOptions& model_opts, ImageInput in, const RuntimeOptions& rt, const std::string& output, bool mode,
                uint64_t seed) {
  const torch::Device device = apply_runtime_options(rt);
  nn::AutoencoderKL model = load_autoencoder(model_opts, device, nn::AutoencoderParts::encoder);
  const auto files = resolve_images(in, model->config);
  at::Generator generator = at::detail::createCPUGenerator(seed);
  const Posteriors p = encode_all(model, files, in, device, mode, generator, nullptr);
  io::write_safetensors(output, {{"mean", p.mean}, {"logvar", p.logvar}, {"z", p.z}},
                        {{"files", json_text(file_list(files))},
                         {"resolution", std::to_string(in.resolution)},
                         {"z", mode ? "mode" : "sample"},
                         {"seed", std::to_string(seed)}});
  std::cout << "encoded " << files.size() << " images at " << in.resolution << " px -> " << output << " (z "
            << shape_string(p.z.sizes()) << ", " << (mode ? "posterior mode" : "posterior sample, seed " + std::to_string(seed))
            << ")\n";
}

void run_decode(const ModelOptions& model_opts, const std::string& input, const std::string& key, const std::string& output,
                int64_t batch_size, const RuntimeOptions& rt) {
  const torch::Device device = apply_runtime_options(rt);
  nn::AutoencoderKL model = load_autoencoder(model_opts, device, nn::AutoencoderParts::decoder);
  io::SafetensorsReader latents(input);
  const torch::Tensor z = latents.tensor(key);
  if (z.dim() != 4 || z.size(1) != model->config.embed_dim)
    throw Error(input + ": tensor '" + key + "' has shape " + shape_string(z.sizes()) + ", the model expects [B," +
                std::to_string(model->config.embed_dim) + ",h,w]");
  if (!z.is_floating_point()) throw Error(input + ": tensor '" + key + "' is not floating point");
  const torch::Tensor x = decode_all(model, z.to(torch::kFloat32), batch_size, device);
  if (io::ends_with(output, ".safetensors")) {
    io::write_safetensors(output, {{"x", x}});
    std::cout << "decoded " << x.size(0) << " latents -> " << output << " (x " << shape_string(x.sizes()) << ")\n";
    return;
  }
  std::vector<std::string> names;
  if (latents.metadata().count("files")) {
    const auto files = nlohmann::json::parse(latents.metadata().at("files"), nullptr, false);
    if (files.is_array() && static_cast<int64_t>(files.size()) == x.size(0))
      for (const auto& f : files) names.push_back(stem(f.get<std::string>()));
  }
  fs::create_directories(output);
  const auto images = io::tensor_to_images(x);
  for (size_t i = 0; i < images.size(); ++i) {
    std::ostringstream name;
    if (names.empty()) name << std::setw(6) << std::setfill('0') << i;
    else name << names[i];
    io::write_png((fs::path(output) / (name.str() + ".png")).string(), images[i]);
  }
  std::cout << "decoded " << images.size() << " latents -> " << output << "/\n";
}

void run_reconstruct(const ModelOptions& model_opts, ImageInput in, const RuntimeOptions& rt, const std::string& output,
                     bool sample, uint64_t seed) {
  const torch::Device device = apply_runtime_options(rt);
  nn::AutoencoderKL model = load_autoencoder(model_opts, device);
  const auto files = resolve_images(in, model->config);
  at::Generator generator = at::detail::createCPUGenerator(seed);
  std::vector<io::Image> inputs;
  const Posteriors p = encode_all(model, files, in, device, !sample, generator, &inputs);
  const auto recon = io::tensor_to_images(decode_all(model, p.z, in.batch_size, device));

  fs::create_directories(output);
  nlohmann::json report = {{"resolution", in.resolution}, {"z", sample ? "sample" : "mode"}, {"images", nlohmann::json::array()}};
  double psnr_sum = 0, ssim_sum = 0;
  std::cout << std::left << std::setw(40) << "image" << std::right << std::setw(10) << "PSNR dB" << std::setw(10) << "SSIM" << "\n";
  for (size_t i = 0; i < files.size(); ++i) {
    const double psnr = eval::psnr(inputs[i], recon[i]);
    const double ssim = eval::ssim(inputs[i], recon[i]);
    psnr_sum += psnr;
    ssim_sum += ssim;
    io::write_png((fs::path(output) / (stem(files[i]) + ".png")).string(), recon[i]);
    report["images"].push_back({{"file", fs::path(files[i]).filename().string()}, {"psnr", psnr}, {"ssim", ssim}});
    std::cout << std::left << std::setw(40) << fs::path(files[i]).filename().string() << std::right << std::fixed
              << std::setprecision(3) << std::setw(10) << psnr << std::setw(10) << std::setprecision(4) << ssim << "\n";
  }
  const double n = static_cast<double>(files.size());
  report["mean_psnr"] = psnr_sum / n;
  report["mean_ssim"] = ssim_sum / n;
  std::cout << std::left << std::setw(40) << "mean" << std::right << std::setprecision(3) << std::setw(10) << psnr_sum / n
            << std::setprecision(4) << std::setw(10) << ssim_sum / n << "\n";

  // grid.png: pairs of rows, inputs above their reconstructions, 8 images per row.
  std::vector<std::vector<io::Image>> rows;
  for (size_t start = 0; start < inputs.size(); start += 8) {
    const size_t end = std::min(inputs.size(), start + 8);
    rows.emplace_back(inputs.begin() + start, inputs.begin() + end);
    rows.emplace_back(recon.begin() + start, recon.begin() + end);
  }
  io::write_png((fs::path(output) / "grid.png").string(), io::make_grid(rows));
  io::write_file_atomically((fs::path(output) / "metrics.json").string(), [&](std::ostream& out) { out << report.dump(2) << "\n"; });
  std::cout << "wrote " << files.size() << " reconstructions, grid.png and metrics.json to " << output << "/\n";
}

}  // namespace

void add_codec_commands(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("encode", "encode images to latents (mean, logvar, z) in a safetensors file");
    auto model = std::make_shared<ModelOptions>();
    auto in = std::make_shared<ImageInput>();
    auto rt = std::make_shared<RuntimeOptions>();
    auto output = std::make_shared<std::string>();
    auto mode = std::make_shared<bool>(false);
    auto seed = std::make_shared<uint64_t>(0);
    add_model_options(*cmd, *model);
    add_image_input_options(*cmd, *in);
    add_runtime_options(*cmd, *rt);
    cmd->add_option("--output", *output, "output .safetensors")->required();
    cmd->add_flag("--mode", *mode, "store the posterior mean as z instead of a sample");
    cmd->add_option("--seed", *seed, "seed of the posterior sample")->capture_default_str();
    cmd->callback([=] { run_encode(*model, *in, *rt, *output, *mode, *seed); });
  }
  {
    auto* cmd = app.add_subcommand("decode", "decode latents to PNG images (or to a safetensors tensor x)");
    auto model = std::make_shared<ModelOptions>();
    auto rt = std::make_shared<RuntimeOptions>();
    auto input = std::make_shared<std::string>();
    auto key = std::make_shared<std::string>("z");
    auto output = std::make_shared<std::string>();
    auto batch = std::make_shared<int64_t>(8);
    add_model_options(*cmd, *model);
    add_runtime_options(*cmd, *rt);
    cmd->add_option("--input", *input, "latents .safetensors")->required();
    cmd->add_option("--key", *key, "tensor to decode")->capture_default_str();
    cmd->add_option("--output", *output, "a folder for PNGs, or a .safetensors file for the raw output")->required();
    cmd->add_option("--batch-size", *batch, "latents per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->callback([=] { run_decode(*model, *input, *key, *output, *batch, *rt); });
  }
  {
    auto* cmd = app.add_subcommand("reconstruct", "encode and decode images; write reconstructions, a grid and PSNR/SSIM");
    auto model = std::make_shared<ModelOptions>();
    auto in = std::make_shared<ImageInput>();
    auto rt = std::make_shared<RuntimeOptions>();
    auto output = std::make_shared<std::string>();
    auto sample = std::make_shared<bool>(false);
    auto seed = std::make_shared<uint64_t>(0);
    add_model_options(*cmd, *model);
    add_image_input_options(*cmd, *in);
    add_runtime_options(*cmd, *rt);
    cmd->add_option("--output", *output, "output folder")->required();
    cmd->add_flag("--sample", *sample, "decode a posterior sample instead of the mode");
    cmd->add_option("--seed", *seed, "seed of the posterior sample")->capture_default_str();
    cmd->callback([=] { run_reconstruct(*model, *in, *rt, *output, *sample, *seed); });
  }
}

}  // namespace vavae::cli
