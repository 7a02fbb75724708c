#pragma once
// Runs the vavae executable as a child process: exit code or signal, output, peak memory, and an
// optional file-size limit (a "full disk" for the writes it makes).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
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
  bool killed_by_condition = false;  // ProcessOptions::kill_when fired
  long max_rss_kib = 0;
  std::string out, err;
};

struct ProcessOptions {
  double timeout_s = 120;
  rlim_t file_size_limit = RLIM_INFINITY;
  // Sends SIGKILL after this many seconds (0 = never): a crash at an arbitrary moment.
  double kill_after_s = 0;
  // Polled about every millisecond; SIGKILL as soon as it returns true.
  std::function<bool()> kill_when = nullptr;
  // Extra environment variables, "NAME=value".
  std::vector<std::string> environment;
};

inline ProcessOptions timeout(double seconds) {
  ProcessOptions o;
  o.timeout_s = seconds;
  return o;
}

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
    for (const auto& assignment : options.environment) {
      const auto eq = assignment.find('=');
      setenv(assignment.substr(0, eq).c_str(), assignment.substr(eq + 1).c_str(), 1);
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
    const bool condition = !killed && options.kill_when && options.kill_when();
    if (!killed && (condition || (options.kill_after_s > 0 && elapsed >= options.kill_after_s) || elapsed >= options.timeout_s)) {
      r.timed_out = !condition && elapsed >= options.timeout_s;
      r.killed_by_condition = condition;
      kill(child, SIGKILL);
      killed = true;
    }
    if (options.kill_when) std::this_thread::yield();  // a checkpoint write lasts about a millisecond
    else std::this_thread::sleep_for(std::chrono::milliseconds(5));
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
