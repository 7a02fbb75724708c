#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

namespace vavae::io {

// A whole file mapped read-only into memory; pages are loaded on demand, so reading a tensor
// out of a 2 GB file costs that tensor's bytes, not the file's.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes `path` through a temporary file in the same folder: flushed, fsynced and renamed over
// the target only once complete, so a crash mid-write leaves the previous file intact.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

bool ends_with(const std::string& text, const std::string& suffix);

}  // namespace vavae::io
