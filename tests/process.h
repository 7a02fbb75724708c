#pragma once
// Runs the vavae executable as a child process: exit code or signal, output, peak memory, and an
// optional file-size limit (a "full disk" for the writes it makes).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fixtures.h"

namespace vavae::test {

struct ProcessResult {
  bool exited = false;   // ended by exit(), not by a signal
  int code = -1;         // exit code when exited
  int signal = 0;        // the signal that ended it otherwise
  bool timed_out = false;
  long max_rss_kib = 0;
  std::string out, err;
};

struct ProcessOptions {
  double timeout_s = 120;
  rlim_t file_size_limit = RLIM_INFINITY;
  // Sends SIGKILL after this many seconds (0 = never): a crash at an arbitrary moment.
  double kill_after_s = 0;
};

inline ProcessResult run_vavae(const std::vector<std::string>& args, const ProcessOptions& options = {}) {
  static int calls = 0;
  const std::string base = scratch_dir("process") + "/" + std::to_string(++calls);
  const std::string out_path = base + ".out", err_path = base + ".err";
  const pid_t child = fork();
  if (child == 0) {
    if (!freopen(out_path.c_str(), "w", stdout) || !freopen(err_path.c_str(), "w", stderr)) _exit(126);
    if (options.file_size_limit != RLIM_INFINITY) {
      rlimit limit{options.file_size_limit, options.file_size_limit};
      setrlimit(RLIMIT_FSIZE, &limit);
      signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG, as on a full disk
    }
    std::vector<char*> argv{const_cast<char*>(VAVAE_EXE)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(VAVAE_EXE, argv.data());
    _exit(127);
  }
  ProcessResult r;
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  rusage usage{};
  bool killed = false;
  for (;;) {
    const pid_t done = wait4(child, &status, WNOHANG, &usage);
    if (done == child) break;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!killed && ((options.kill_after_s > 0 && elapsed >= options.kill_after_s) || elapsed >= options.timeout_s)) {
      r.timed_out = elapsed >= options.timeout_s;
      kill(child, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.exited = WIFEXITED(status);
  r.code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r.max_rss_kib = usage.ru_maxrss;
  std::ifstream out(out_path), err(err_path);
  r.out.assign(std::istreambuf_iterator<char>(out), {});
  r.err.assign(std::istreambuf_iterator<char>(err), {});
  return r;
}

}  // namespace vavae::test
