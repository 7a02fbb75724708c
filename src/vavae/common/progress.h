#pragma once
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

namespace vavae {

// One progress line for long work: step, stage and values, throughput and the time left.
class Progress {
 public:
  explicit Progress(int64_t total_steps) : total_(total_steps), start_(std::chrono::steady_clock::now()) {}

  void report(int64_t step, int64_t images_done, const std::string& values) const {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(images_done) / elapsed : 0.0;
    const double per_step = step > 0 ? elapsed / static_cast<double>(step) : 0.0;
    std::ostringstream line;
    line << "step " << step << "/" << total_ << " | " << values << " | ";
    line.setf(std::ios::fixed);
    line.precision(1);
    line << rate << " img/s | ETA " << duration(per_step * static_cast<double>(total_ - step));
    std::cout << line.str() << std::endl;
  }

  double elapsed_seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

  static std::string duration(double seconds) {
    const long s = static_cast<long>(seconds + 0.5);
    char buffer[32];
    if (s >= 3600) std::snprintf(buffer, sizeof(buffer), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else std::snprintf(buffer, sizeof(buffer), "%ldm%02lds", s / 60, s % 60);
    return buffer;
  }

 private:
  int64_t total_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace vavae
