#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "vavae/io/image.h"

// Image datasets: an item is an 8-bit RGB image and a class label (-1 when there is none).
namespace vavae::data {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual io::Image image(size_t index) const = 0;  // throws vavae::Error for an unreadable item
  // The image, or a cheaper smaller one whose shorter side is still at least `shorter_side` (JPEG
  // files decode DCT-scaled, see io::decode_jpeg).
  virtual io::Image image_at_least(size_t index, int64_t shorter_side) const { return image(index); }
  virtual int64_t label(size_t index) const = 0;
  virtual std::string describe() const = 0;
  // What a person looks for to find the item: its file, or "#index".
  virtual std::string item_name(size_t index) const { return "#" + std::to_string(index); }
};

// Fashion-MNIST (or MNIST) IDX files, gzipped or not: `{train,t10k}-images-idx3-ubyte[.gz]` and the
// labels beside them. Grayscale is replicated to RGB.
std::shared_ptr<Dataset> idx_dataset(const std::string& folder, const std::string& split);

// Images below `root`, recursively (png, jpg, jpeg); the first sub-folder is the class.
std::shared_ptr<Dataset> image_folder(const std::string& root);

// torchvision's ImageFolder exactly (the order LightningDiT's extraction and evaluation see):
// the sorted sub-folders of `root` are the classes 0, 1, ...; each is walked recursively, files in
// sorted (folder, name) order; files that are not PNG or JPEG are left out (and counted in describe()).
std::shared_ptr<Dataset> class_folders(const std::string& root);

// One image path per line (relative paths are taken from the list's folder); no labels.
std::shared_ptr<Dataset> file_list(const std::string& list);

// The first `count` items of another dataset (all when count is 0 or larger than it).
std::shared_ptr<Dataset> subset(std::shared_ptr<Dataset> base, size_t count);
// Items [begin, end) of another dataset (a data-parallel rank's share).
std::shared_ptr<Dataset> slice(std::shared_ptr<Dataset> base, size_t begin, size_t end);

// From a source spec: "fashion-mnist[:train|:test]" (the Debian dataset folder), "idx:FOLDER[:split]",
// a .txt file list, or an image folder.
std::shared_ptr<Dataset> open_dataset(const std::string& spec);
// As open_dataset, but a folder is read as class_folders (ImageFolder), as LightningDiT's tools do.
std::shared_ptr<Dataset> open_labelled_dataset(const std::string& spec);

}  // namespace vavae::data
