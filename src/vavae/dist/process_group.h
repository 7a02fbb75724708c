#pragma once
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

// Data-parallel processes on LibTorch's c10d: a TCPStore for the rendezvous and ProcessGroupGloo
// between CPUs (ProcessGroupNCCL between GPUs when LibTorch has it), set up from the variables that
// torchrun and Slurm provide. One process without any of them is a group of one whose collectives
// do nothing.
namespace vavae::dist {

struct Launch {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // "torchrun" (or vavae --nproc), "slurm", "none"
};

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
std::optional<std::string> process_environment(const std::string& name);

// torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; else Slurm's
// SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE and the first host of
// SLURM_NODELIST (MASTER_ADDR and MASTER_PORT win when set); else one process. Malformed or
// inconsistent values are errors naming the variable.
Launch launch_from_environment(const EnvLookup& env = process_environment);

// The first host of a Slurm node list: "gpu[03-05,9],cpu1" -> "gpu03".
std::string first_slurm_host(const std::string& nodelist);

class Work;

class Group {
 public:
  Group() = default;  // one process
  // Connects every rank (rank 0 serves the store); `device` picks Gloo (CPU) or NCCL (CUDA). A
  // launch of one process is a group of one, with nothing to connect.
  static std::shared_ptr<Group> connect(const Launch& launch, torch::Device device, std::chrono::milliseconds timeout);
  ~Group();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  bool distributed() const { return size_ > 1; }
  std::string backend() const { return backend_; }

  // Sums each tensor in place across ranks, returning at once; wait() on the result.
  std::shared_ptr<Work> all_reduce_sum_async(std::vector<torch::Tensor>& tensors);
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  torch::Tensor mean_across_ranks(const torch::Tensor& t);  // a reduced copy, divided by the size
  double sum_across_ranks(double value);
  bool all_ranks(bool value);  // logical and
  bool any_rank(bool value);   // logical or
  void broadcast(std::vector<torch::Tensor>& tensors, int root = 0);
  void barrier();

 private:
  struct Backend;
  std::shared_ptr<Backend> impl_;
  int rank_ = 0, size_ = 1;
  std::string backend_ = "none";
  torch::Device device_ = torch::kCPU;
};

class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

// Threads for this rank: `requested`, or when it is 0 (all cores) the machine's cores shared
// between the ranks of this machine.
int threads_per_rank(int requested, const Launch& launch);

// The device of this rank: with several ranks, CUDA means the GPU numbered by the local rank (an
// Error naming the rank when the machine has no such GPU).
torch::Device rank_device(torch::Device requested, const Launch& launch);

// A group from the environment: connected when the launcher made several ranks, else one process.
std::shared_ptr<Group> group_from_environment(torch::Device device, std::chrono::milliseconds timeout);

// Whether this build has ProcessGroupNCCL (a CUDA LibTorch with NCCL, and nccl.h when compiled).
bool nccl_built();

// Contiguous share of `count` items for a rank: [begin, end), the first ranks one larger when uneven.
std::pair<int64_t, int64_t> shard_range(int64_t count, int rank, int size);

}  // namespace vavae::dist
