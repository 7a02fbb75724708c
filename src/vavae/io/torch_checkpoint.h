#pragma once
#include <string>

#include "vavae/io/pickle.h"

namespace vavae::io {

// Reads a file written by torch.save, zip (.pt/.pth/.ckpt, PyTorch >= 1.6) or legacy (pre-1.6),
// without executing anything: see pickle.h. Returns the unpickled top-level object.
pickle::ValuePtr read_torch_checkpoint(const std::string& path);

// True when the file starts like a torch.save file (zip archive or legacy pickle).
bool looks_like_torch_checkpoint(const std::string& path);

}  // namespace vavae::io
