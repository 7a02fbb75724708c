#pragma once
#include <string>
#include <vector>

// `vavae train --nproc N`: the ranks of one machine without torchrun.
namespace vavae::dist {

// A TCP port on 127.0.0.1 that nothing listens on at the moment of asking.
int free_local_port();

// Runs this executable `ranks` times with `arguments`, each with the variables torchrun sets
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT). When a rank
// fails, the others get SIGTERM and, after `grace_seconds`, SIGKILL. Returns 0 when every rank
// succeeded; otherwise throws an Error naming the first rank that failed and how.
void run_local_ranks(int ranks, const std::vector<std::string>& arguments, double grace_seconds = 20);

}  // namespace vavae::dist
