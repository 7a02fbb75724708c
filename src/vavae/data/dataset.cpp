#include "vavae/data/dataset.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "vavae/common/checked.h"
#include "vavae/common/error.h"

namespace vavae::data {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

// The whole file, gunzipped when compressed (gzread passes plain files through). Once the first
// `header_bytes` are in, `expected_size(header)` says how long the file must be, and reading stops
// as soon as it runs longer: a gzip bomb is cut off at the size its header declares.
std::string read_maybe_gzipped(const std::string& path, size_t header_bytes,
                               const std::function<uint64_t(const std::string&)>& expected_size) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open");
  std::string out;
  uint64_t limit = header_bytes;
  bool header_seen = false;
  char buffer[1 << 16];
  int n = 0;
  try {
    while ((n = gzread(f, buffer, sizeof(buffer))) > 0) {
      out.append(buffer, static_cast<size_t>(n));
      if (!header_seen && out.size() >= header_bytes) {
        header_seen = true;
        limit = expected_size(out.substr(0, header_bytes));
      }
      if (header_seen && out.size() > limit)
        throw Error(path + ": longer than its header says (" + std::to_string(limit) + " bytes)");
    }
  } catch (...) {
    gzclose(f);
    throw;
  }
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw Error(path + ": corrupt gzip data");
  return out;
}

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}

std::string find_idx(const std::string& folder, const std::string& stem) {
  for (const std::string& name : {stem, stem + ".gz"})
    if (fs::exists(fs::path(folder) / name)) return (fs::path(folder) / name).string();
  throw Error(folder + ": no " + stem + "[.gz] (install the Debian package dataset-fashion-mnist, or point at an IDX folder)");
}

class IdxDataset : public Dataset {
 public:
  IdxDataset(const std::string& folder, const std::string& split) : folder_(folder), split_(split) {
    const std::string prefix = split == "test" ? "t10k" : split == "train" ? "train" : "";
    if (prefix.empty()) throw Error("IDX split must be train or test, got '" + split + "'");
    const std::string images_path = find_idx(folder, prefix + "-images-idx3-ubyte");
    const std::string labels_path = find_idx(folder, prefix + "-labels-idx1-ubyte");
    pixels_ = read_maybe_gzipped(images_path, 16, [&](const std::string& header) {
      if (be32(header, 0) != 0x803) throw Error(images_path + ": not an IDX image file (magic 0x803)");
      count_ = be32(header, 4);
      rows_ = be32(header, 8);
      cols_ = be32(header, 12);
      if (rows_ == 0 || cols_ == 0) throw Error(images_path + ": images of " + std::to_string(rows_) + "x" + std::to_string(cols_) + " pixels");
      // count x rows x cols of three u32s can exceed 64 bits: checked.
      return 16 + static_cast<uint64_t>(checked_product(std::array<int64_t, 3>{count_, rows_, cols_}, images_path + ": image count x rows x cols"));
    });
    labels_ = read_maybe_gzipped(labels_path, 8, [&](const std::string& header) {
      if (be32(header, 0) != 0x801) throw Error(labels_path + ": not an IDX label file (magic 0x801)");
      return 8 + static_cast<uint64_t>(be32(header, 4));
    });
    if (pixels_.size() < 16) throw Error(images_path + ": not an IDX image file (shorter than its header)");
    if (labels_.size() < 8) throw Error(labels_path + ": not an IDX label file (shorter than its header)");
    const int64_t pixels = static_cast<int64_t>(count_) * rows_ * cols_;
    if (pixels_.size() != 16 + static_cast<uint64_t>(pixels))
      throw Error(images_path + ": " + std::to_string(pixels_.size()) + " bytes do not match its header (" + std::to_string(count_) +
                  " images of " + std::to_string(rows_) + "x" + std::to_string(cols_) + ")");
    if (be32(labels_, 4) != count_ || labels_.size() != 8 + size_t(count_)) throw Error(labels_path + ": label count does not match the images");
  }
  size_t size() const override { return count_; }
  io::Image image(size_t i) const override {
    io::Image img;
    img.height = rows_;
    img.width = cols_;
    img.rgb.resize(size_t(rows_) * cols_ * 3);
    const uint8_t* src = reinterpret_cast<const uint8_t*>(pixels_.data()) + 16 + i * rows_ * cols_;
    for (size_t p = 0; p < size_t(rows_) * cols_; ++p) img.rgb[3 * p] = img.rgb[3 * p + 1] = img.rgb[3 * p + 2] = src[p];
    return img;
  }
  int64_t label(size_t i) const override { return uint8_t(labels_[8 + i]); }
  std::string describe() const override {
    return "IDX " + folder_ + " (" + split_ + ", " + std::to_string(count_) + " images of " + std::to_string(rows_) + "x" +
           std::to_string(cols_) + ")";
  }

 private:
  std::string folder_, split_, pixels_, labels_;
  uint32_t count_ = 0, rows_ = 0, cols_ = 0;
};

class FileDataset : public Dataset {
 public:
  FileDataset(std::vector<std::string> files, std::vector<int64_t> labels, std::string description)
      : files_(std::move(files)), labels_(std::move(labels)), description_(std::move(description)) {}
  size_t size() const override { return files_.size(); }
  io::Image image(size_t i) const override { return io::read_image(files_[i]); }
  io::Image image_at_least(size_t i, int64_t shorter_side) const override { return io::read_image(files_[i], shorter_side); }
  int64_t label(size_t i) const override { return labels_.empty() ? -1 : labels_[i]; }
  std::string describe() const override { return description_; }
  std::string item_name(size_t i) const override { return files_[i]; }

 private:
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  std::string description_;
};

class Slice : public Dataset {
 public:
  Slice(std::shared_ptr<Dataset> base, size_t begin, size_t end, std::string description)
      : base_(std::move(base)), begin_(begin), end_(end), description_(std::move(description)) {}
  size_t size() const override { return end_ - begin_; }
  io::Image image(size_t i) const override { return base_->image(begin_ + i); }
  io::Image image_at_least(size_t i, int64_t shorter_side) const override { return base_->image_at_least(begin_ + i, shorter_side); }
  int64_t label(size_t i) const override { return base_->label(begin_ + i); }
  std::string describe() const override { return base_->describe() + ", " + description_; }
  std::string item_name(size_t i) const override { return base_->item_name(begin_ + i); }

 private:
  std::shared_ptr<Dataset> base_;
  size_t begin_, end_;
  std::string description_;
};

}  // namespace

std::shared_ptr<Dataset> idx_dataset(const std::string& folder, const std::string& split) {
  return std::make_shared<IdxDataset>(folder, split);
}

std::shared_ptr<Dataset> image_folder(const std::string& root) {
  if (!fs::is_directory(root)) throw Error(root + ": not a folder");
  std::vector<std::string> files;
  // Symbolic links to folders are followed, each folder once: a link back up the tree is no loop.
  std::set<std::pair<dev_t, ino_t>> visited;
  auto first_visit = [&](const std::string& folder) {
    struct stat st {};
    return ::stat(folder.c_str(), &st) == 0 && visited.emplace(st.st_dev, st.st_ino).second;
  };
  first_visit(root);
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, fs::directory_options::follow_directory_symlink, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code entry_ec;
    const std::string path = it->path().string();
    if (it->is_directory(entry_ec)) {
      if (!first_visit(path)) it.disable_recursion_pending();
    } else if (it->is_regular_file(entry_ec) && io::is_image_file(path)) {
      files.push_back(path);
    }
  }
  if (ec) throw Error(root + ": cannot list the folder: " + ec.message());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(root + ": holds no PNG/JPEG images");
  std::map<std::string, int64_t> classes;
  std::vector<int64_t> labels;
  for (const auto& f : files) {
    const fs::path rel = fs::relative(f, root);
    const std::string cls = std::distance(rel.begin(), rel.end()) > 1 ? rel.begin()->string() : "";
    labels.push_back(classes.emplace(cls, static_cast<int64_t>(classes.size())).first->second);
  }
  const bool labelled = classes.size() > 1 || !classes.begin()->first.empty();
  const std::string description = "image folder " + root + " (" + std::to_string(files.size()) + " images, " +
                                  std::to_string(classes.size()) + " classes)";
  return std::make_shared<FileDataset>(std::move(files), labelled ? labels : std::vector<int64_t>{}, description);
}

std::shared_ptr<Dataset> class_folders(const std::string& root) {
  if (!fs::is_directory(root)) throw Error(root + ": not a folder of class sub-folders");
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw Error(root + ": no class sub-folders (ImageFolder layout: ROOT/CLASS/IMAGE)");
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  int64_t left_out = 0;
  for (size_t label = 0; label < classes.size(); ++label) {
    // os.walk's (folder, name) order, not the order of whole path strings ("a/x" before "a-b/y").
    std::vector<std::pair<std::string, std::string>> entries;
    for (const auto& e : fs::recursive_directory_iterator(fs::path(root) / classes[label]))
      if (e.is_regular_file()) entries.emplace_back(e.path().parent_path().string(), e.path().filename().string());
    std::sort(entries.begin(), entries.end());
    for (const auto& [folder, name] : entries) {
      const std::string path = (fs::path(folder) / name).string();
      if (!io::is_image_file(path)) {
        ++left_out;
        continue;
      }
      files.push_back(path);
      labels.push_back(static_cast<int64_t>(label));
    }
  }
  if (files.empty()) throw Error(root + ": no PNG or JPEG images in its class sub-folders");
  std::string description = "ImageFolder " + root + " (" + std::to_string(files.size()) + " images, " +
                            std::to_string(classes.size()) + " classes";
  if (left_out > 0) description += ", " + std::to_string(left_out) + " files that are not PNG or JPEG left out";
  return std::make_shared<FileDataset>(std::move(files), std::move(labels), description + ")");
}

std::shared_ptr<Dataset> file_list(const std::string& list) {
  std::ifstream in(list);
  if (!in) throw Error(list + ": cannot open file list");
  std::vector<std::string> files;
  std::string line;
  const fs::path base = fs::path(list).parent_path();
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    files.push_back(fs::path(line).is_absolute() ? line : (base / line).string());
  }
  if (files.empty()) throw Error(list + ": the file list is empty");
  const std::string description = "file list " + list + " (" + std::to_string(files.size()) + " images)";
  return std::make_shared<FileDataset>(std::move(files), std::vector<int64_t>{}, description);
}

std::shared_ptr<Dataset> subset(std::shared_ptr<Dataset> base, size_t count) {
  if (count == 0 || count >= base->size()) return base;
  return std::make_shared<Slice>(std::move(base), 0, count, "first " + std::to_string(count));
}

std::shared_ptr<Dataset> slice(std::shared_ptr<Dataset> base, size_t begin, size_t end) {
  if (begin > end || end > base->size())
    throw Error(base->describe() + ": items [" + std::to_string(begin) + ", " + std::to_string(end) + ") are out of range");
  if (begin == 0 && end == base->size()) return base;
  return std::make_shared<Slice>(std::move(base), begin, end, "items " + std::to_string(begin) + " to " + std::to_string(end));
}

std::shared_ptr<Dataset> open_dataset(const std::string& spec) {
  auto split_of = [](const std::string& s, const std::string& fallback) {
    const auto colon = s.rfind(':');
    return colon == std::string::npos ? fallback : s.substr(colon + 1);
  };
  if (spec.rfind("fashion-mnist", 0) == 0) return idx_dataset(kFashionMnist, split_of(spec.substr(13), "train"));
  if (spec.rfind("idx:", 0) == 0) {
    const std::string rest = spec.substr(4);
    const auto colon = rest.rfind(':');
    if (colon != std::string::npos && (rest.substr(colon + 1) == "train" || rest.substr(colon + 1) == "test"))
      return idx_dataset(rest.substr(0, colon), rest.substr(colon + 1));
    return idx_dataset(rest, "train");
  }
  if (fs::is_regular_file(spec) && fs::path(spec).extension() == ".txt") return file_list(spec);
  if (fs::is_directory(spec)) return image_folder(spec);
  throw Error("dataset '" + spec + "': not fashion-mnist[:train|:test], idx:FOLDER[:split], a .txt file list or an image folder");
}

std::shared_ptr<Dataset> open_labelled_dataset(const std::string& spec) {
  return fs::is_directory(spec) ? class_folders(spec) : open_dataset(spec);
}

}  // namespace vavae::data
