#pragma once
#include <atomic>
#include <csignal>

namespace vavae {

// Set by SIGINT/SIGTERM while a StopSignalScope lives: long runs check it, save and stop cleanly.
inline std::atomic<bool> stop_requested{false};
extern "C" inline void request_stop(int) { stop_requested = true; }

// Installs the stop handlers for the lifetime of a run.
struct StopSignalScope {
  StopSignalScope() {
    stop_requested = false;
    previous_int = std::signal(SIGINT, request_stop);
    previous_term = std::signal(SIGTERM, request_stop);
  }
  ~StopSignalScope() {
    std::signal(SIGINT, previous_int);
    std::signal(SIGTERM, previous_term);
  }
  void (*previous_int)(int);
  void (*previous_term)(int);
};

}  // namespace vavae
