#include "vavae/dist/process_group.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>

#if defined(USE_C10D_NCCL) && __has_include(<nccl.h>)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define VAVAE_HAVE_NCCL 1
#endif

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <iostream>

#include "vavae/common/error.h"

namespace vavae::dist {
namespace {

// LibTorch 2 split the process-group front from the backends that ProcessGroupGloo/NCCL became.
#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

int parse_int(const std::string& name, const std::string& value, int low, int high) {
  size_t used = 0;
  long parsed = 0;
  try {
    parsed = std::stol(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || parsed < low || parsed > high)
    throw Error("environment variable " + name + "='" + value + "': expected an integer in [" + std::to_string(low) + ", " +
                std::to_string(high) + "]");
  return static_cast<int>(parsed);
}

class C10dWork : public Work {
 public:
  explicit C10dWork(std::vector<c10::intrusive_ptr<c10d::Work>> works) : works_(std::move(works)) {}
  void wait() override {
    for (auto& w : works_) w->wait();
  }

 private:
  std::vector<c10::intrusive_ptr<c10d::Work>> works_;
};

class DoneWork : public Work {
 public:
  void wait() override {}
};

}  // namespace

struct Group::Backend {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<BackendBase> group;
};

std::optional<std::string> process_environment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (!value) return std::nullopt;
  return std::string(value);
}

std::string first_slurm_host(const std::string& nodelist) {
  const std::string first = nodelist.substr(0, nodelist.find(','));
  const auto open = nodelist.find('[');
  if (open == std::string::npos || open > first.size()) {
    if (first.empty()) throw Error("SLURM_NODELIST is empty");
    return first;
  }
  // "gpu[03-05,9]": the prefix and the first number of the bracket, with its zero padding.
  const auto end = nodelist.find_first_of("-,]", open + 1);
  if (end == std::string::npos || end == open + 1) throw Error("SLURM_NODELIST='" + nodelist + "': cannot read the first host");
  return nodelist.substr(0, open) + nodelist.substr(open + 1, end - open - 1);
}

Launch launch_from_environment(const EnvLookup& env) {
  Launch l;
  auto number = [&](const std::string& name, int low, int high) { return parse_int(name, *env(name), low, high); };
  if (env("WORLD_SIZE") || env("RANK")) {
    for (const char* required : {"RANK", "WORLD_SIZE"})
      if (!env(required)) throw Error(std::string("environment variable ") + required + " is missing (torchrun sets RANK and WORLD_SIZE together)");
    l.launcher = "torchrun";
    l.world_size = number("WORLD_SIZE", 1, 1 << 20);
    l.rank = number("RANK", 0, l.world_size - 1);
    l.local_rank = env("LOCAL_RANK") ? number("LOCAL_RANK", 0, l.world_size - 1) : l.rank;
    l.local_world_size = env("LOCAL_WORLD_SIZE") ? number("LOCAL_WORLD_SIZE", 1, l.world_size) : l.world_size;
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    l.launcher = "slurm";
    l.world_size = number("SLURM_NTASKS", 1, 1 << 20);
    l.rank = number("SLURM_PROCID", 0, l.world_size - 1);
    l.local_rank = env("SLURM_LOCALID") ? number("SLURM_LOCALID", 0, l.world_size - 1) : 0;
    // "4" or "4(x2)": tasks on this node.
    if (auto per_node = env("SLURM_NTASKS_PER_NODE")) l.local_world_size = parse_int("SLURM_NTASKS_PER_NODE", per_node->substr(0, per_node->find('(')), 1, l.world_size);
    if (auto nodes = env("SLURM_NODELIST")) l.master_addr = first_slurm_host(*nodes);
  } else {
    return l;
  }
  if (auto addr = env("MASTER_ADDR")) l.master_addr = *addr;
  if (auto port = env("MASTER_PORT")) l.master_port = number("MASTER_PORT", 1, 65535);
  if (l.master_addr.empty()) throw Error("environment variable MASTER_ADDR is empty");
  return l;
}

bool nccl_built() {
#ifdef VAVAE_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

Group::~Group() = default;

std::shared_ptr<Group> Group::connect(const Launch& launch, torch::Device device, std::chrono::milliseconds timeout) {
  auto g = std::make_shared<Group>();
  g->rank_ = launch.rank;
  g->size_ = launch.world_size;
  g->device_ = device;
  if (launch.world_size == 1) return g;
  g->impl_ = std::make_shared<Backend>();
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(launch.master_port);
  so.isServer = launch.rank == 0;
  so.numWorkers = static_cast<size_t>(launch.world_size);
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    g->impl_->store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
#ifdef VAVAE_HAVE_NCCL
    if (device.is_cuda()) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      g->impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->impl_->store, launch.rank, launch.world_size, options);
      g->backend_ = "nccl";
    }
#endif
    if (!g->impl_->group) {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(launch.master_addr == "localhost" ? "127.0.0.1" : launch.master_addr));
      g->impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(g->impl_->store, launch.rank, launch.world_size, options);
      g->backend_ = "gloo";
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw Error("rank " + std::to_string(launch.rank) + " of " + std::to_string(launch.world_size) + ": cannot join the process group at " +
                launch.master_addr + ":" + std::to_string(launch.master_port) + ": " + what);
  }
  return g;
}

std::shared_ptr<Work> Group::all_reduce_sum_async(std::vector<torch::Tensor>& tensors) {
  if (size_ == 1 || tensors.empty()) return std::make_shared<DoneWork>();
  // One collective per tensor: a list given to one call means copies of one tensor on several devices.
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one{t};
    works.push_back(impl_->group->allreduce(one));
  }
  return std::make_shared<C10dWork>(std::move(works));
}

void Group::all_reduce_sum(std::vector<torch::Tensor>& tensors) { all_reduce_sum_async(tensors)->wait(); }

torch::Tensor Group::mean_across_ranks(const torch::Tensor& t) {
  if (size_ == 1) return t;
  std::vector<torch::Tensor> buffer{t.detach().clone().contiguous()};
  all_reduce_sum(buffer);
  return buffer[0] / static_cast<double>(size_);
}

double Group::sum_across_ranks(double value) {
  if (size_ == 1) return value;
  std::vector<torch::Tensor> buffer{torch::full({1}, value, torch::TensorOptions().dtype(torch::kFloat64).device(device_))};
  all_reduce_sum(buffer);
  return buffer[0].item<double>();
}

bool Group::all_ranks(bool value) { return sum_across_ranks(value ? 1.0 : 0.0) == static_cast<double>(size_); }
bool Group::any_rank(bool value) { return sum_across_ranks(value ? 1.0 : 0.0) > 0.0; }

void Group::broadcast(std::vector<torch::Tensor>& tensors, int root) {
  if (size_ == 1) return;
  c10d::BroadcastOptions options;
  options.rootRank = root;
  // One tensor per call: the backends broadcast a list as one tensor per device.
  std::vector<c10::intrusive_ptr<c10d::Work>> pending;
  std::vector<std::vector<torch::Tensor>> lists;
  lists.reserve(tensors.size());
  for (auto& t : tensors) {
    lists.push_back({t});
    pending.push_back(impl_->group->broadcast(lists.back(), options));
  }
  for (auto& w : pending) w->wait();
}

void Group::barrier() {
  if (size_ == 1) return;
  impl_->group->barrier()->wait();
}

int threads_per_rank(int requested, const Launch& launch) {
  if (requested != 0 || launch.local_world_size <= 1) return requested;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / launch.local_world_size);
}

torch::Device rank_device(torch::Device requested, const Launch& launch) {
  if (!requested.is_cuda() || launch.world_size == 1) return requested;
  const auto gpus = static_cast<int>(torch::cuda::device_count());
  if (launch.local_rank >= gpus)
    throw Error("rank " + std::to_string(launch.rank) + ": local rank " + std::to_string(launch.local_rank) + " runs on GPU " +
                std::to_string(launch.local_rank) + ", but this machine shows " + std::to_string(gpus) +
                " CUDA device(s): start at most one rank per GPU on each machine");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
}

std::shared_ptr<Group> group_from_environment(torch::Device device, std::chrono::milliseconds timeout) {
  return Group::connect(launch_from_environment(), device, timeout);
}

std::pair<int64_t, int64_t> shard_range(int64_t count, int rank, int size) {
  const int64_t base = count / size, extra = count % size;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace vavae::dist
