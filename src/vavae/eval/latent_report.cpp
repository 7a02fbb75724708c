#include "vavae/eval/latent_report.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/common/json.h"
#include "vavae/data/latent_folder.h"
#include "vavae/eval/html.h"
#include "vavae/io/files.h"

namespace vavae::eval {
namespace {

namespace fs = std::filesystem;

std::vector<double> to_vector(const torch::Tensor& t) {
  const torch::Tensor d = t.to(torch::kCPU, torch::kFloat64).contiguous().flatten();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// matplotlib's viridis at eleven stops, interpolated linearly.
std::array<uint8_t, 3> viridis(double t) {
  static const uint8_t stops[11][3] = {{68, 1, 84},    {72, 36, 117},  {65, 68, 135},  {53, 95, 141},  {42, 120, 142}, {33, 145, 140},
                                       {34, 168, 132}, {68, 191, 112}, {122, 209, 81}, {189, 223, 38}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 10;
  const int i = std::min(9, static_cast<int>(t));
  const double f = t - i;
  std::array<uint8_t, 3> c{};
  for (int k = 0; k < 3; ++k) c[k] = static_cast<uint8_t>(std::lround(stops[i][k] * (1 - f) + stops[i + 1][k] * f));
  return c;
}

}  // namespace

LatentReport analyse_latent_folder(const std::string& folder, const std::string& name, const LatentReportOptions& o) {
  torch::NoGradGuard no_grad;
  LatentReport r;
  r.name = name, r.folder = folder;
  const data::LatentItems items = data::draw_latent_items(folder, o.seed, o.images, true);
  const torch::Tensor& z = items.latents;
  r.items = z.size(0), r.channels = z.size(1), r.height = z.size(2), r.width = z.size(3);
  r.channel_mean = z.mean({0, 2, 3});
  r.channel_std = z.std({0, 2, 3}, /*unbiased=*/true, false);

  // What the diffusion model sees: latents normalised by the folder's statistics.
  data::LatentStats stats;
  if (auto stored = data::read_latent_stats(folder)) {
    stats = *stored;
    if (stats.mean.size(1) != r.channels)
      throw Error(folder + "/latents_stats.pt: " + std::to_string(stats.mean.size(1)) + " channels, the latents have " + std::to_string(r.channels));
    r.normalization = "latents_stats.pt";
  } else {
    stats = {r.channel_mean.view({1, -1, 1, 1}), r.channel_std.view({1, -1, 1, 1})};
    r.normalization = "the drawn items (no latents_stats.pt)";
  }
  const torch::Tensor normalized = data::normalize_latents(z, stats);
  const torch::Tensor vectors = normalized.permute({0, 2, 3, 1}).reshape({-1, r.channels});
  r.spectrum = covariance_spectrum(vectors);

  // latent_vis.py's sample: a random item, its plain or flipped latent, one random position.
  const int64_t points = std::min(o.points, r.items * r.height * r.width);
  at::Generator generator = at::detail::createCPUGenerator(o.seed + 1);
  const torch::Tensor item = torch::randint(r.items, {points}, generator, torch::kLong);
  const torch::Tensor flip = torch::randint(2, {points}, generator, torch::kLong).to(torch::kBool);
  const torch::Tensor row = torch::randint(r.height, {points}, generator, torch::kLong);
  const torch::Tensor col = torch::randint(r.width, {points}, generator, torch::kLong);
  const torch::Tensor flipped = data::normalize_latents(items.latents_flip, stats);
  const auto pick = [&](const torch::Tensor& t) { return t.index({item, torch::indexing::Slice(), row, col}); };  // [P, C]
  const torch::Tensor sample = torch::where(flip.unsqueeze(1), pick(flipped), pick(normalized));
  std::cout << "latent-report: " << name << ": t-SNE of " << points << " latent vectors" << std::endl;
  r.embedding = tsne(sample, o.tsne);
  r.densities = gaussian_kde_at_points(r.embedding);
  r.uniformity = uniformity_of_densities(r.densities);

  const int64_t classes = items.labels.numel() > 0 ? items.labels.max().item<int64_t>() + 1 : 0;
  if (items.labels.min().item<int64_t>() >= 0 && classes >= 2 && r.items >= 10) {
    r.probe_train = r.items * 4 / 5, r.probe_test = r.items - r.probe_train;  // the drawn order is random
    const torch::Tensor features = normalized.flatten(1);
    std::cout << "latent-report: " << name << ": linear probe on " << features.size(1) << "-d latents" << std::endl;
    r.probe = linear_probe(features.slice(0, 0, r.probe_train), items.labels.slice(0, 0, r.probe_train),
                           features.slice(0, r.probe_train), items.labels.slice(0, r.probe_train), o.probe_iterations);
    r.probed = true;
  }
  return r;
}

io::Image density_scatter(const torch::Tensor& embedding, const torch::Tensor& densities, int64_t size) {
  io::Image im;
  im.height = im.width = size;
  im.rgb.assign(static_cast<size_t>(size * size * 3), 255);
  const std::vector<double> x = to_vector(embedding.select(1, 0)), y = to_vector(embedding.select(1, 1)), d = to_vector(densities);
  if (x.empty()) return im;
  const auto [x0, x1] = std::minmax_element(x.begin(), x.end());
  const auto [y0, y1] = std::minmax_element(y.begin(), y.end());
  const auto [d0, d1] = std::minmax_element(d.begin(), d.end());
  const double margin = 8, span = static_cast<double>(size) - 2 * margin;
  const double scale = span / std::max({*x1 - *x0, *y1 - *y0, 1e-12});
  std::vector<size_t> order(x.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d[a] < d[b]; });  // densest drawn last
  for (size_t i : order) {
    const double cx = margin + (x[i] - *x0) * scale + (span - (*x1 - *x0) * scale) / 2;
    const double cy = margin + (*y1 - y[i]) * scale + (span - (*y1 - *y0) * scale) / 2;
    const auto color = viridis((d[i] - *d0) / std::max(*d1 - *d0, 1e-300));
    for (int64_t py = static_cast<int64_t>(cy) - 2; py <= static_cast<int64_t>(cy) + 2; ++py)
      for (int64_t px = static_cast<int64_t>(cx) - 2; px <= static_cast<int64_t>(cx) + 2; ++px) {
        if (px < 0 || py < 0 || px >= size || py >= size) continue;
        if ((px - cx) * (px - cx) + (py - cy) * (py - cy) > 5.0) continue;
        std::copy(color.begin(), color.end(), im.rgb.begin() + (py * size + px) * 3);
      }
  }
  return im;
}

std::string write_latent_report(const std::vector<LatentReport>& reports, const LatentReportOptions& o, const std::string& output) {
  if (reports.empty()) throw Error("latent-report: no latent folders");
  fs::create_directories(output);
  nlohmann::json summary = nlohmann::json::array();
  std::map<std::string, Series> spectra, means, stds;
  for (const auto& r : reports) {
    const std::vector<double> eig = to_vector(r.spectrum.eigenvalues), mean = to_vector(r.channel_mean), std = to_vector(r.channel_std);
    double total = 0;
    for (double v : eig) total += v;
    for (size_t i = 0; i < eig.size(); ++i) spectra[r.name].emplace_back(static_cast<double>(i + 1), eig[i] / total);
    for (size_t i = 0; i < mean.size(); ++i) means[r.name].emplace_back(static_cast<double>(i), mean[i]);
    for (size_t i = 0; i < std.size(); ++i) stds[r.name].emplace_back(static_cast<double>(i), std[i]);
    nlohmann::json j = {{"name", r.name},
                        {"folder", r.folder},
                        {"items", r.items},
                        {"latent_shape", {r.channels, r.height, r.width}},
                        {"normalization", r.normalization},
                        {"channel_mean", mean},
                        {"channel_std", std},
                        {"eigenvalues", eig},
                        {"effective_rank", r.spectrum.effective_rank},
                        {"tsne_points", r.embedding.size(0)},
                        {"density_std", r.uniformity.density_std},
                        {"density_cv", r.uniformity.density_cv},
                        {"normalized_entropy", r.uniformity.normalized_entropy},
                        {"gini", r.uniformity.gini}};
    if (r.probed)
      j["linear_probe"] = {{"train_accuracy", r.probe.train_accuracy}, {"test_accuracy", r.probe.test_accuracy},
                           {"dims", r.probe.dims}, {"train_items", r.probe_train}, {"test_items", r.probe_test}};
    summary.push_back(j);
  }
  io::write_file_atomically((fs::path(output) / "latent_report.json").string(), [&](std::ostream& out) { out << summary.dump(2) << "\n"; });

  std::ostringstream html;
  html << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vavae latent report</title><style>"
       << "body{font-family:sans-serif;margin:2em;max-width:1400px}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
       << "figcaption{font-weight:bold;margin-bottom:.3em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
       << "td{text-align:right}td:first-child{text-align:left}</style></head><body><h1>vavae latent report</h1>";
  html << "<p>Latents normalised as LightningDiT normalises them ((z - mean) / std per channel). The uniformity numbers are "
          "latent_vis.py's: a t-SNE embedding of "
       << o.points << " latent vectors (random item, plain or flipped, random position; exact t-SNE, perplexity "
       << format_number(o.tsne.perplexity) << "), a Gaussian KDE (Scott) over it, and statistics of the density at the points: "
          "an evenly filled embedding has a low coefficient of variation and Gini coefficient and a normalised entropy near 1.</p>";
  auto row = [&](const std::string& label, const std::function<std::string(const LatentReport&)>& cell) {
    html << "<tr><td>" << html_escape(label) << "</td>";
    for (const auto& r : reports) html << "<td>" << cell(r) << "</td>";
    html << "</tr>";
  };
  html << "<table><tr><th></th>";
  for (const auto& r : reports) html << "<th>" << html_escape(r.name) << "</th>";
  html << "</tr>";
  row("folder", [](const LatentReport& r) { return html_escape(r.folder); });
  row("items drawn", [](const LatentReport& r) { return std::to_string(r.items); });
  row("latent C x h x w", [](const LatentReport& r) {
    return std::to_string(r.channels) + " x " + std::to_string(r.height) + " x " + std::to_string(r.width);
  });
  row("normalised by", [](const LatentReport& r) { return html_escape(r.normalization); });
  row("effective rank (of C)", [](const LatentReport& r) {
    return format_number(r.spectrum.effective_rank) + " / " + std::to_string(r.channels);
  });
  row("density CV (lower: more even)", [](const LatentReport& r) { return format_number(r.uniformity.density_cv); });
  row("density Gini (lower: more even)", [](const LatentReport& r) { return format_number(r.uniformity.gini); });
  row("normalised entropy (higher: more even)", [](const LatentReport& r) { return format_number(r.uniformity.normalized_entropy); });
  row("linear probe, test accuracy", [](const LatentReport& r) {
    return r.probed ? format_number(r.probe.test_accuracy) + " (" + std::to_string(r.probe_train) + " / " + std::to_string(r.probe_test) + " items)"
                    : std::string("no labels");
  });
  html << "</table><h2>Density of the 2-D embedding</h2>";
  for (size_t k = 0; k < reports.size(); ++k) {
    // Also as files (density_1.png, ...), for pages that link pictures rather than embed them.
    const io::Image picture = density_scatter(reports[k].embedding, reports[k].densities);
    io::write_png((fs::path(output) / ("density_" + std::to_string(k + 1) + ".png")).string(), picture);
    html << png_figure(reports[k].name + ": t-SNE coloured by KDE density", picture, 420);
  }
  html << "<h2>Covariance spectrum</h2>"
       << line_plot("eigenvalues / their sum, largest first", spectra, true, "eigenvalue") << "<h2>Per-channel statistics (raw latents)</h2>"
       << line_plot("mean", means, false, "channel") << line_plot("std", stds, false, "channel") << "</body></html>\n";
  const std::string path = (fs::path(output) / "latent_report.html").string();
  io::write_file_atomically(path, [&](std::ostream& out) { out << html.str(); });
  return path;
}

}  // namespace vavae::eval
