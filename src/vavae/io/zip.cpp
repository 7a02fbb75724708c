#include "vavae/io/zip.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "vavae/common/error.h"

namespace vavae::io {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEnd = 0x06054b50;
constexpr uint32_t kEnd64 = 0x06064b50, kEnd64Locator = 0x07064b50;
constexpr uint64_t kMaxEntries = 1u << 20;
// Deflate cannot expand data by more than about 1032:1 (258-byte matches coded in 2 bits).
constexpr uint64_t kMaxDeflateRatio = 1032;

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

ZipArchive::ZipArchive(std::shared_ptr<MappedFile> file) : file_(std::move(file)) {
  const std::string& p = file_->path();
  const uint8_t* data = file_->data();
  const uint64_t size = file_->size();
  auto fail = [&](const std::string& what) -> void { throw Error(p + ": zip archive: " + what); };
  auto need = [&](uint64_t offset, uint64_t bytes, const std::string& what) {
    if (offset > size || bytes > size - offset) fail(what + " runs past the end of the file");
  };

  // The end-of-central-directory record: within the last 64 KiB + 22 bytes (its comment's limit).
  if (size < 22) fail("too short for an end-of-central-directory record");
  uint64_t end = size - 22;
  const uint64_t lowest = size > 22 + 0xffff ? size - 22 - 0xffff : 0;
  while (le(data + end, 4) != kEnd) {
    if (end == lowest) fail("no end-of-central-directory record");
    --end;
  }
  uint64_t count = le(data + end + 10, 2), directory_size = le(data + end + 12, 4), directory = le(data + end + 16, 4);
  if (count == 0xffff || directory_size == 0xffffffff || directory == 0xffffffff) {
    if (end < 20 || le(data + end - 20, 4) != kEnd64Locator) fail("zip64 sizes without a zip64 locator");
    const uint64_t record = le(data + end - 20 + 8, 8);
    need(record, 56, "the zip64 end record");
    if (le(data + record, 4) != kEnd64) fail("the zip64 locator points at no zip64 end record");
    count = le(data + record + 32, 8);
    directory_size = le(data + record + 40, 8);
    directory = le(data + record + 48, 8);
  }
  need(directory, directory_size, "the central directory");
  if (count > kMaxEntries || count > directory_size / 46) fail(std::to_string(count) + " entries cannot fit its central directory");

  uint64_t at = directory;
  const uint64_t directory_end = directory + directory_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (directory_end - at < 46 || le(data + at, 4) != kCentralHeader) fail("central directory entry " + std::to_string(i) + " is malformed");
    const uint8_t* h = data + at;
    Entry e;
    const uint64_t flags = le(h + 8, 2);
    e.method = static_cast<uint16_t>(le(h + 10, 2));
    e.crc32 = static_cast<uint32_t>(le(h + 16, 4));
    e.compressed = le(h + 20, 4);
    e.uncompressed = le(h + 24, 4);
    const uint64_t name_len = le(h + 28, 2), extra_len = le(h + 30, 2), comment_len = le(h + 32, 2);
    uint64_t local = le(h + 42, 4);
    if (directory_end - at - 46 < name_len + extra_len + comment_len) fail("central directory entry " + std::to_string(i) + " runs past the directory");
    e.name.assign(reinterpret_cast<const char*>(h + 46), name_len);
    // zip64 extra field: the 64-bit values, in this order, of the fields that hold 0xffffffff.
    const uint8_t* extra = h + 46 + name_len;
    for (uint64_t x = 0; x + 4 <= extra_len;) {
      const uint64_t id = le(extra + x, 2), len = le(extra + x + 2, 2);
      if (x + 4 + len > extra_len) fail("entry '" + e.name + "' has a malformed extra field");
      if (id == 1) {
        uint64_t y = x + 4;
        for (uint64_t* field : {&e.uncompressed, &e.compressed, &local}) {
          if (*field != 0xffffffff) continue;
          if (y + 8 > x + 4 + len) fail("entry '" + e.name + "' has a short zip64 field");
          *field = le(extra + y, 8);
          y += 8;
        }
      }
      x += 4 + len;
    }
    if (flags & 1) fail("entry '" + e.name + "' is encrypted");
    if (e.method != 0 && e.method != 8) fail("entry '" + e.name + "' uses compression method " + std::to_string(e.method) + " (only stored and deflate)");
    if (e.method == 0 && e.compressed != e.uncompressed) fail("stored entry '" + e.name + "' has two different sizes");
    need(local, 30, "the local header of '" + e.name + "'");
    if (le(data + local, 4) != kLocalHeader) fail("entry '" + e.name + "' has no local header");
    const uint64_t local_skip = 30 + le(data + local + 26, 2) + le(data + local + 28, 2);
    need(local, local_skip, "the local header of '" + e.name + "'");
    e.data_offset = local + local_skip;
    need(e.data_offset, e.compressed, "entry '" + e.name + "'");
    if (index_.count(e.name)) fail("entry '" + e.name + "' appears twice");
    index_[e.name] = entries_.size();
    entries_.push_back(std::move(e));
    at += 46 + name_len + extra_len + comment_len;
  }
}

const ZipArchive::Entry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

ZipArchive::Bytes ZipArchive::read(const Entry& e, uint64_t max_bytes) const {
  const std::string where = path() + ": zip entry '" + e.name + "'";
  if (e.uncompressed > max_bytes)
    throw Error(where + " declares " + std::to_string(e.uncompressed) + " bytes where at most " + std::to_string(max_bytes) +
                " are accepted");
  Bytes out;
  const uint8_t* source = file_->data() + e.data_offset;
  if (e.method == 0) {
    out.data = source;
    out.size = e.uncompressed;
  } else {
    if (e.uncompressed / kMaxDeflateRatio > e.compressed)
      throw Error(where + " declares " + std::to_string(e.uncompressed) + " bytes from " + std::to_string(e.compressed) +
                  " compressed: beyond what deflate can produce");
    out.owned.resize(e.uncompressed);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw Error(where + ": cannot start inflating");
    z.next_in = const_cast<Bytef*>(source);
    z.next_out = out.owned.data();
    uint64_t in_left = e.compressed, out_left = e.uncompressed;
    int rc = Z_OK;
    for (;;) {
      const uInt in_chunk = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      const uInt out_chunk = static_cast<uInt>(std::min<uint64_t>(out_left, 1u << 30));
      z.avail_in = in_chunk;
      z.avail_out = out_chunk;
      rc = inflate(&z, Z_NO_FLUSH);
      const uInt consumed = in_chunk - z.avail_in, produced = out_chunk - z.avail_out;
      in_left -= consumed;
      out_left -= produced;
      // Stops at the stream's end, on corrupt data, or when no progress is possible: input used up
      // (truncated) or the declared output size reached with the stream wanting more.
      if (rc != Z_OK || (consumed == 0 && produced == 0)) break;
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END || out_left != 0)
      throw Error(where + " does not inflate to its declared " + std::to_string(e.uncompressed) + " bytes");
    out.data = out.owned.data();
    out.size = out.owned.size();
  }
  uLong crc = crc32(0L, Z_NULL, 0);
  for (uint64_t done = 0; done < out.size;) {
    const uInt chunk = static_cast<uInt>(std::min<uint64_t>(out.size - done, 1u << 30));
    crc = crc32(crc, out.data + done, chunk);
    done += chunk;
  }
  if (static_cast<uint32_t>(crc) != e.crc32) throw Error(where + " fails its CRC-32 check");
  return out;
}

namespace {

void put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

}  // namespace

void write_zip_stored(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string central;
  uint64_t offset = 0;
  std::vector<std::string> locals;
  for (const auto& [name, data] : entries) {
    if (data.size() >= 0xffffffffu || offset >= 0xffffffffu) throw Error(path + ": entry '" + name + "' needs zip64, not written here");
    const uint32_t crc = static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    std::string local;
    put(local, kLocalHeader, 4), put(local, 20, 2), put(local, 0, 2), put(local, 0, 2), put(local, 0, 2), put(local, 0x21, 2);
    put(local, crc, 4), put(local, data.size(), 4), put(local, data.size(), 4), put(local, name.size(), 2), put(local, 0, 2);
    local += name;
    put(central, kCentralHeader, 4), put(central, 20, 2), put(central, 20, 2), put(central, 0, 2), put(central, 0, 2);
    put(central, 0, 2), put(central, 0x21, 2), put(central, crc, 4), put(central, data.size(), 4), put(central, data.size(), 4);
    put(central, name.size(), 2), put(central, 0, 2), put(central, 0, 2), put(central, 0, 2), put(central, 0, 2), put(central, 0, 4);
    put(central, offset, 4);
    central += name;
    offset += local.size() + data.size();
    locals.push_back(std::move(local));
  }
  std::string end;
  put(end, kEnd, 4), put(end, 0, 2), put(end, 0, 2), put(end, entries.size(), 2), put(end, entries.size(), 2);
  put(end, central.size(), 4), put(end, offset, 4), put(end, 0, 2);
  write_file_atomically(path, [&](std::ostream& out) {
    for (size_t i = 0; i < entries.size(); ++i) out << locals[i] << entries[i].second;
    out << central << end;
  });
}

}  // namespace vavae::io
