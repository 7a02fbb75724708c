#include "vavae/dist/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "vavae/common/error.h"

namespace vavae::dist {

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("cannot open a socket to find a free port: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  if (!ok) throw Error(std::string("cannot find a free port on 127.0.0.1: ") + std::strerror(errno));
  return ntohs(address.sin_port);
}

void run_local_ranks(int ranks, const std::vector<std::string>& arguments, double grace_seconds) {
  if (ranks < 1) throw Error("--nproc must be at least 1, got " + std::to_string(ranks));
  const std::string port = std::to_string(free_local_port());
  std::vector<pid_t> children;
  for (int rank = 0; rank < ranks; ++rank) {
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("cannot start rank ") + std::to_string(rank) + ": " + std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(ranks).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> argv{const_cast<char*>("vavae")};
      for (const auto& a : arguments) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      ::_exit(127);
    }
    children.push_back(pid);
  }
  std::string failure;
  std::vector<bool> running(children.size(), true);
  size_t left = children.size();
  auto stop_others = [&](int signal) {
    for (size_t i = 0; i < children.size(); ++i)
      if (running[i]) ::kill(children[i], signal);
  };
  std::chrono::steady_clock::time_point kill_at{};
  while (left > 0) {
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      for (size_t i = 0; i < children.size(); ++i) {
        if (children[i] != done) continue;
        running[i] = false;
        --left;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && failure.empty()) {
          failure = "rank " + std::to_string(i) + " of " + std::to_string(ranks) +
                    (WIFEXITED(status) ? " exited with code " + std::to_string(WEXITSTATUS(status))
                                       : " was killed by signal " + std::to_string(WTERMSIG(status)));
          stop_others(SIGTERM);
          kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000));
        }
      }
      continue;
    }
    if (!failure.empty() && std::chrono::steady_clock::now() >= kill_at) {
      stop_others(SIGKILL);
      kill_at = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!failure.empty()) throw Error(failure + "; the other ranks were stopped");
}

}  // namespace vavae::dist
