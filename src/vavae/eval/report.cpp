#include "vavae/eval/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "vavae/common/error.h"
#include "vavae/io/files.h"

namespace vavae::eval {
namespace {

namespace fs = std::filesystem;

using Series = std::vector<std::pair<double, double>>;  // (step, value)

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    out += {table[v >> 18], table[(v >> 12) & 63], table[(v >> 6) & 63], table[v & 63]};
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += {table[v >> 18], table[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += {table[v >> 18], table[(v >> 12) & 63], table[(v >> 6) & 63], '='};
  }
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::string number(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

// One SVG line plot of several series sharing the axes.
std::string plot(const std::string& title, const std::map<std::string, Series>& series, bool log_y) {
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  auto ty = [&](double v) { return log_y ? std::log10(std::max(v, 1e-12)) : v; };
  for (const auto& [name, s] : series)
    for (const auto& [x, y] : s) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, ty(y)), y1 = std::max(y1, ty(y));
    }
  std::ostringstream svg;
  svg << "<figure><figcaption>" << escape(title) << (log_y ? " (log scale)" : "") << "</figcaption>";
  if (x0 > x1) return svg.str() + "<p>no data yet</p></figure>";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double w = 560, h = 240, left = 60, bottom = 30;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (w - left - 10); };
  auto py = [&](double y) { return (h - bottom) - (ty(y) - y0) / (y1 - y0) * (h - bottom - 10); };
  svg << "<svg viewBox='0 0 " << w << " " << h << "' width='" << w << "' height='" << h << "' role='img'>";
  svg << "<rect x='" << left << "' y='0' width='" << w - left - 10 << "' height='" << h - bottom
      << "' fill='#fafafa' stroke='#ccc'/>";
  for (int i = 0; i <= 4; ++i) {
    const double yv = y0 + (y1 - y0) * i / 4.0;
    const double yy = (h - bottom) - (yv - y0) / (y1 - y0) * (h - bottom - 10);
    svg << "<text x='" << left - 4 << "' y='" << yy + 4 << "' font-size='10' text-anchor='end'>"
        << number(log_y ? std::pow(10.0, yv) : yv) << "</text>";
  }
  svg << "<text x='" << left << "' y='" << h - 8 << "' font-size='10'>step " << number(x0) << "</text>";
  svg << "<text x='" << w - 10 << "' y='" << h - 8 << "' font-size='10' text-anchor='end'>step " << number(x1) << "</text>";
  size_t k = 0;
  for (const auto& [name, s] : series) {
    const char* color = colors[k % 6];
    svg << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
    for (const auto& [x, y] : s)
      if (std::isfinite(y)) svg << px(x) << "," << py(y) << " ";
    svg << "'/>";
    svg << "<text x='" << left + 8 << "' y='" << 14 + 13 * k << "' font-size='11' fill='" << color << "'>" << escape(name) << "</text>";
    ++k;
  }
  svg << "</svg></figure>";
  return svg.str();
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
  html << "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vavae run " << escape(run_dir) << "</title><style>"
       << "body{font-family:sans-serif;margin:2em;max-width:1200px}figure{display:inline-block;margin:0 1em 1em 0}"
       << "figcaption{font-weight:bold;margin-bottom:.3em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}"
       << "pre{background:#f4f4f4;padding:1em;overflow:auto}img{image-rendering:pixelated;max-width:100%}</style></head><body>";
  html << "<h1>vavae training run</h1><p>" << escape(fs::absolute(run_dir).string()) << "</p>";
  html << "<h2>Losses</h2>" << plot("reconstruction (nll) and total loss", pick({"train/nll_loss", "train/total_loss"}), true)
       << plot("VF loss", pick({"train/vf_loss"}), false) << plot("KL (unweighted)", pick({"train/kl_loss"}), false)
       << plot("GAN: generator and discriminator", pick({"train/g_loss", "train/disc_loss"}), false);
  html << "<h2>Adaptive weights</h2>" << plot("vf_weight and d_weight", pick({"train/vf_weight", "train/d_weight"}), true);
  html << "<h2>Validation</h2>" << plot("PSNR (dB)", pick({"val/psnr"}), false) << plot("SSIM", pick({"val/ssim"}), false);
  html << "<table><tr><th>step</th><th>split</th><th>images</th><th>PSNR dB</th><th>SSIM</th></tr>";
  for (const auto& e : evaluations)
    html << "<tr><td>" << e.value("step", 0) << "</td><td>" << escape(e.value("split", "")) << "</td><td>" << e.value("val/images", 0)
         << "</td><td>" << number(e.value("val/psnr", 0.0)) << "</td><td>" << number(e.value("val/ssim", 0.0)) << "</td></tr>";
  html << "</table>";
  html << "<h2>Reconstructions</h2><p>Inputs above their reconstructions (posterior mode).</p>";
  std::vector<fs::path> grids;
  if (fs::is_directory(fs::path(run_dir) / "images"))
    for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "images"))
      if (e.path().filename().string().rfind("val_", 0) == 0) grids.push_back(e.path());
  std::sort(grids.begin(), grids.end());
  if (grids.size() > 3) grids.erase(grids.begin(), grids.end() - 3);
  for (auto it = grids.rbegin(); it != grids.rend(); ++it)
    html << "<figure><figcaption>" << escape(it->filename().string()) << "</figcaption><img alt='reconstruction grid' width='"
         << 512 << "' src='data:image/png;base64," << base64(read_all(it->string())) << "'></figure>";
  html << "<h2>Config</h2><pre>" << escape(read_all((fs::path(run_dir) / "config.yaml").string())) << "</pre></body></html>\n";
  const std::string path = (fs::path(run_dir) / "report.html").string();
  io::write_file_atomically(path, [&](std::ostream& out) { out << html.str(); });
  return path;
}

}  // namespace vavae::eval
