#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vavae/io/files.h"

// A read-only zip archive (the container of torch.save files) over a mapped file. The central
// directory is validated before anything is read (zip64 included): every entry lies inside the
// file, names are unique, only stored and deflated entries exist. Stored entries are served in
// place; a deflated one is inflated only after its declared size passed the caller's bound and
// deflate's largest possible ratio, and must then produce exactly that size and its CRC-32.
namespace vavae::io {

class ZipArchive {
 public:
  struct Entry {
    std::string name;
    uint16_t method = 0;  // 0 stored, 8 deflated
    uint32_t crc32 = 0;
    uint64_t compressed = 0, uncompressed = 0;
    uint64_t data_offset = 0;  // of the entry's bytes within the file
  };

  // Bytes of one entry: in place for stored entries, owned for inflated ones.
  struct Bytes {
    const uint8_t* data = nullptr;
    size_t size = 0;
    std::vector<uint8_t> owned;
  };

  explicit ZipArchive(std::shared_ptr<MappedFile> file);

  const std::string& path() const { return file_->path(); }
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;
  // The entry's bytes; Error when it would hold more than max_bytes.
  Bytes read(const Entry& entry, uint64_t max_bytes) const;

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
};

// Writes a zip archive of stored (uncompressed) entries atomically, as numpy's savez does.
void write_zip_stored(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries);

}  // namespace vavae::io
