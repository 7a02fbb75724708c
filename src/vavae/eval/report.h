#pragma once
#include <string>

namespace vavae::eval {

// Writes RUN_DIR/report.html, one self-contained page: loss curves and adaptive weights as SVG
// plots, validation metrics, the latest reconstruction grids (embedded PNGs) and the config.
// Returns the page's path.
std::string write_report(const std::string& run_dir);

}  // namespace vavae::eval
