// Precompiled header: the LibTorch API and the standard library pieces every unit uses.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
