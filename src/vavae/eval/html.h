#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "vavae/io/image.h"

// Pieces of the self-contained HTML pages vavae writes (report.html, latent_report.html): text,
// numbers, SVG line plots and embedded PNGs.
namespace vavae::eval {

using Series = std::vector<std::pair<double, double>>;  // (x, y)

std::string html_escape(const std::string& s);
std::string base64(const std::string& bytes);
std::string format_number(double v);  // 4 significant digits

// One SVG line plot of several series sharing the axes; `x_label` names the x axis ("step").
std::string line_plot(const std::string& title, const std::map<std::string, Series>& series, bool log_y,
                      const std::string& x_label = "step");

// A <figure> with the image embedded as a PNG data URI, shown `width` pixels wide.
std::string png_figure(const std::string& caption, const io::Image& image, int width);
std::string png_figure(const std::string& caption, const std::string& png_bytes, int width);

}  // namespace vavae::eval
