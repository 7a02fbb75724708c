#include "vavae/eval/html.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace vavae::eval {

std::string html_escape(const std::string& s) {
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

std::string format_number(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

std::string line_plot(const std::string& title, const std::map<std::string, Series>& series, bool log_y, const std::string& x_label) {
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  auto ty = [&](double v) { return log_y ? std::log10(std::max(v, 1e-12)) : v; };
  for (const auto& [name, s] : series)
    for (const auto& [x, y] : s) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, ty(y)), y1 = std::max(y1, ty(y));
    }
  std::ostringstream svg;
  svg << "<figure><figcaption>" << html_escape(title) << (log_y ? " (log scale)" : "") << "</figcaption>";
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
        << format_number(log_y ? std::pow(10.0, yv) : yv) << "</text>";
  }
  svg << "<text x='" << left << "' y='" << h - 8 << "' font-size='10'>" << html_escape(x_label) << " " << format_number(x0) << "</text>";
  svg << "<text x='" << w - 10 << "' y='" << h - 8 << "' font-size='10' text-anchor='end'>" << html_escape(x_label) << " " << format_number(x1) << "</text>";
  size_t k = 0;
  for (const auto& [name, s] : series) {
    const char* color = colors[k % 6];
    svg << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
    for (const auto& [x, y] : s)
      if (std::isfinite(y)) svg << px(x) << "," << py(y) << " ";
    svg << "'/>";
    svg << "<text x='" << left + 8 << "' y='" << 14 + 13 * k << "' font-size='11' fill='" << color << "'>" << html_escape(name) << "</text>";
    ++k;
  }
  svg << "</svg></figure>";
  return svg.str();
}

std::string png_figure(const std::string& caption, const std::string& png_bytes, int width) {
  return "<figure><figcaption>" + html_escape(caption) + "</figcaption><img alt='" + html_escape(caption) + "' width='" +
         std::to_string(width) + "' src='data:image/png;base64," + base64(png_bytes) + "'></figure>";
}

std::string png_figure(const std::string& caption, const io::Image& image, int width) {
  return png_figure(caption, io::encode_png(image), width);
}

}  // namespace vavae::eval
