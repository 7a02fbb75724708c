#include "vavae/eval/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/eval/html.h"
#include "vavae/io/files.h"

namespace vavae::eval {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace

std::string write_report(const std::string& run_dir) {
  const std::string metrics_path = (fs::path(run_dir) / "metrics.jsonl").string();
  std::ifstream in(metrics_path);
  if (!in) throw Error(run_dir + ": no metrics.jsonl (is this a run folder?)");
  std::map<std::string, Series> values;
  std::vector<nlohmann::json> evaluations;
  std::string line;
  size_t number_of_line = 0;
  while (std::getline(in, line)) {
    ++number_of_line;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(metrics_path + ": line " + std::to_string(number_of_line) + " is not JSON");
    }
    if (!j.is_object()) throw Error(metrics_path + ": line " + std::to_string(number_of_line) + " is not a JSON object");
    const double step = j.value("step", 0.0);
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.value().is_number() && it.key() != "step") values[it.key()].emplace_back(step, it.value().get<double>());
    if (j.value("split", "") != "train") evaluations.push_back(j);
  }
  auto pick = [&](std::initializer_list<const char*> names) {
    std::map<std::string, Series> out;
    for (const char* n : names)
      if (values.count(n)) out[n] = values[n];
    return out;
  };

  std::ostringstream html;
  html << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vavae run " << html_escape(run_dir) << "</title><style>"
       << "body{font-family:sans-serif;margin:2em;max-width:1200px}figure{display:inline-block;margin:0 1em 1em 0}"
       << "figcaption{font-weight:bold;margin-bottom:.3em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
       << "pre{background:#f4f4f4;padding:1em;overflow:auto}img{image-rendering:pixelated;max-width:100%}</style></head><body>";
  html << "<h1>vavae training run</h1><p>" << html_escape(fs::absolute(run_dir).string()) << "</p>";
  html << "<h2>Losses</h2>" << line_plot("reconstruction (nll) and total loss", pick({"train/nll_loss", "train/total_loss"}), true)
       << line_plot("VF loss", pick({"train/vf_loss"}), false) << line_plot("KL (unweighted)", pick({"train/kl_loss"}), false)
       << line_plot("GAN: generator and discriminator", pick({"train/g_loss", "train/disc_loss"}), false);
  html << "<h2>Adaptive weights</h2>" << line_plot("vf_weight and d_weight", pick({"train/vf_weight", "train/d_weight"}), true);
  html << "<h2>Validation</h2>" << line_plot("PSNR (dB)", pick({"val/psnr"}), false) << line_plot("SSIM", pick({"val/ssim"}), false);
  html << "<table><tr><th>step</th><th>split</th><th>images</th><th>PSNR dB</th><th>SSIM</th></tr>";
  for (const auto& e : evaluations)
    html << "<tr><td>" << e.value("step", 0) << "</td><td>" << html_escape(e.value("split", "")) << "</td><td>" << e.value("val/images", 0)
         << "</td><td>" << format_number(e.value("val/psnr", 0.0)) << "</td><td>" << format_number(e.value("val/ssim", 0.0)) << "</td></tr>";
  html << "</table>";
  html << "<h2>Reconstructions</h2><p>Inputs above their reconstructions (posterior mode).</p>";
  std::vector<fs::path> grids;
  if (fs::is_directory(fs::path(run_dir) / "images"))
    for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "images"))
      if (e.path().filename().string().rfind("val_", 0) == 0) grids.push_back(e.path());
  std::sort(grids.begin(), grids.end());
  if (grids.size() > 3) grids.erase(grids.begin(), grids.end() - 3);
  for (auto it = grids.rbegin(); it != grids.rend(); ++it)
    html << png_figure(it->filename().string(), read_all(it->string()), 512);
  html << "<h2>Config</h2><pre>" << html_escape(read_all((fs::path(run_dir) / "config.yaml").string())) << "</pre></body></html>\n";
  const std::string path = (fs::path(run_dir) / "report.html").string();
  io::write_file_atomically(path, [&](std::ostream& out) { out << html.str(); });
  return path;
}

}  // namespace vavae::eval
