// Files from strangers: every crafted input under tests/hostile (made by make_hostile.py) against
// the readers and the executable. Each attack class ends in a clear error, within time and memory,
// and never in a signal, a tensor of bytes that were not in the file, or code being run.
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>

#include "fixtures.h"
#include "process.h"
#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/train_config.h"
#include "vavae/data/dataset.h"
#include "vavae/io/image.h"
#include "vavae/io/weights.h"

namespace vavae::test {
namespace {

namespace fs = std::filesystem;

std::string hostile(const std::string& name) { return std::string(VAVAE_SOURCE_DIR) + "/tests/hostile/" + name; }

// The message of the Error that `fn` throws ("" when it throws none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> weight_files() {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(hostile("")))
    for (const char* ext : {".pt", ".pth", ".safetensors"})
      if (e.path().extension() == ext) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}

// What each crafted weight file must be refused with ("" = it is well-formed and loads).
const std::map<std::string, std::string> kExpected = {
    {"ok_zip.pt", ""},
    {"ok_legacy_view.pth", ""},
    {"os_system.pt", ""},  // the global is an inert placeholder; the state dict loads
    {"escape_sequences.safetensors", ""},
    {"deep_tuple.pt", "nested deeper than 1000 levels"},
    {"rebuild_from_type_deep.pt", "nested deeper than 1000 levels"},
    {"self_append.pt", "put inside itself"},
    {"cycle.pt", "modified after being nested"},
    {"view_offset_overflow.pt", "overflows"},
    {"view_stride_overflow.pt", "overflows"},
    {"view_expand.pt", "a view of 1099511627776 elements over a storage of 4"},
    {"bad_memo.pt", "bad memo key '12x'"},
    {"empty_text_int.pt", "empty text integer"},
    {"missing_record.pt", "storage record 'archive/data/7' is missing"},
    {"storage_dtype_conflict.pt", "storage '0' is referenced as 2 x Long after 4 x Float"},
    {"crc_mismatch.pt", "fails its CRC-32 check"},
    {"truncated_zip.pt", "no end-of-central-directory record"},
    {"zip_bomb.pt", "declares 2400000000 bytes where at most"},
    {"pickle_inflation_bomb.pt", "'archive/data.pkl' declares 16777220 bytes where at most"},
    {"many_values.pt", "top level is not a dict"},
    {"legacy_huge_storage.pth", "more than the file's remaining"},
    {"legacy_missing_data.pth", "storage 's0' is declared but its data is not in the file"},
    {"legacy_truncated.pth", "storage 's0' is truncated"},
    {"legacy_bad_view.pth", "storage view out of bounds"},
    {"dup_key.safetensors", "has the key 'encoder.w' twice"},
    {"dup_metadata.safetensors", "has the key 'a' twice"},
    {"deep_shape.safetensors", "nests deeper than 4 levels"},
    {"shape_overflow.safetensors", "shape overflows"},
    {"header_too_long.safetensors", "exceeds the 100 MiB cap"},
    {"offsets_past_end.safetensors", "past the data section"},
};

TEST(Hostile, EveryCraftedFileIsListedWithItsOutcome) {
  for (const auto& f : weight_files()) EXPECT_TRUE(kExpected.count(f)) << f << " has no expected outcome";
  EXPECT_EQ(weight_files().size(), kExpected.size());
}

TEST(Hostile, EachWeightFileIsRefusedForItsOwnReason) {
  for (const auto& entry : kExpected) {
    const std::string& name = entry.first;
    const std::string& expected = entry.second;
    const std::string message = error_of([&] { io::read_weights(hostile(name)); });
    if (expected.empty()) {
      EXPECT_EQ(message, "") << name;
    } else {
      EXPECT_NE(message.find(expected), std::string::npos) << name << ": " << message;
      EXPECT_EQ(message.rfind(hostile(name), 0), 0u) << "the message names the file: " << message;
    }
  }
}

// `inspect` and `export` end in time with 0 or 1, never a signal; what export writes holds only
// bytes that were in the file; nothing a file names is executed.
TEST(Hostile, InspectAndExportEndCleanlyAndExportOnlyBytesFromTheFile) {
  fs::remove("/tmp/vavae_pwned");
  const std::string dir = scratch_dir("hostile_export");
  for (const auto& name : weight_files()) {
    SCOPED_TRACE(name);
    const ProcessResult inspect = run_vavae({"inspect", hostile(name)}, timeout(60));
    ASSERT_TRUE(inspect.exited) << "signal " << inspect.signal << (inspect.timed_out ? " (timed out)" : "");
    EXPECT_EQ(inspect.code, kExpected.at(name).empty() ? 0 : 1) << inspect.err;
    EXPECT_EQ(inspect.out.find('\x1b'), std::string::npos) << "an escape sequence reached the terminal";
    EXPECT_EQ(inspect.err.find('\x1b'), std::string::npos);
    EXPECT_LE(std::count(inspect.err.begin(), inspect.err.end(), '\n'), 1) << inspect.err;
    EXPECT_LT(inspect.max_rss_kib, 1536 * 1024) << "peak memory";

    const std::string out = dir + "/" + name + ".safetensors";
    const ProcessResult exported = run_vavae({"export", hostile(name), out}, timeout(60));
    ASSERT_TRUE(exported.exited) << "signal " << exported.signal;
    EXPECT_TRUE(exported.code == 0 || exported.code == 1) << exported.err;
    if (exported.code != 0) continue;
    const std::string source = read_file(hostile(name));
    for (const auto& [key, t] : io::SafetensorsReader(out).all()) {
      const std::string bytes(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
      EXPECT_NE(source.find(bytes), std::string::npos) << key << " holds bytes that are not in the file";
    }
  }
  EXPECT_FALSE(fs::exists("/tmp/vavae_pwned")) << "a pickle ran code";
}

TEST(Hostile, LegacyStorageViewsKeepTheirOffsets) {
  const io::WeightFile f = io::read_weights(hostile("ok_legacy_view.pth"));
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_TRUE(torch::equal(f.tensors[0].second, torch::arange(6, torch::kFloat32)));
  // storage view (offset 2, length 3) = [2, 3, 4]; the tensor starts 1 into it
  EXPECT_TRUE(torch::equal(f.tensors[1].second, torch::tensor({3.0f, 4.0f}))) << f.tensors[1].second;
}

TEST(Hostile, TerminalEscapesInNamesAndMetadataArePrintedInert) {
  const ProcessResult r = run_vavae({"inspect", hostile("escape_sequences.safetensors")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("encoder.\\x1b]0;owned\\x07\\x1b[2J"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\\xc2\\x9b31m"), std::string::npos) << "C1 control CSI" << r.out;
  EXPECT_NE(r.out.find("note\\x1b[5m = \\x1b[41mblink"), std::string::npos) << r.out;
}

TEST(Hostile, ImagesDecodeOnlyAcceptedFormatsWithinTheirSize) {
  for (const char* bad : {"bomb.png", "gif_named.png", "psd_named.png", "truncated.png", "zero_bytes.png", "text.jpg"}) {
    const std::string message = error_of([&] { io::read_image(hostile(std::string("images/") + bad)); });
    EXPECT_NE(message.find(hostile(std::string("images/") + bad)), std::string::npos) << bad << ": " << message;
  }
  EXPECT_NE(error_of([&] { io::read_image(hostile("images/bomb.png")); }).find("declares 16000x16000 pixels"), std::string::npos);
  // Grayscale, alpha, 16-bit, palette, CMYK: all become 8-bit RGB with the right values.
  auto pixel = [](const io::Image& im, int x, int y, int c) { return static_cast<int>(im.rgb[(y * im.width + x) * 3 + c]); };
  for (const char* name : {"gray.png", "gray_alpha.png", "gray16.png", "gray.jpg"}) {
    const io::Image im = io::read_image(hostile(std::string("images/") + name));
    ASSERT_EQ(im.width, 8);
    ASSERT_EQ(im.height, 8);
    if (std::string(name) != "gray.jpg") {
      EXPECT_EQ(pixel(im, 3, 2, 0), (3 * 30 + 2) % 256) << name;
      EXPECT_EQ(pixel(im, 3, 2, 1), pixel(im, 3, 2, 0)) << name;
    }
  }
  const io::Image rgba = io::read_image(hostile("images/rgba.png"));
  EXPECT_EQ(pixel(rgba, 5, 1, 1), 255 - (5 * 30 + 1) % 256);
  EXPECT_EQ(pixel(rgba, 5, 1, 2), 7);
  const io::Image rgb16 = io::read_image(hostile("images/rgb16.png"));
  EXPECT_EQ(pixel(rgb16, 4, 4, 2), 255);
  const io::Image palette = io::read_image(hostile("images/palette.png"));
  EXPECT_EQ(pixel(palette, 1, 1, 0), 0xf0);  // (1 * 30 + 1) % 2 = palette entry 1
  EXPECT_EQ(pixel(palette, 1, 0, 0), 0x10);
  const io::Image cmyk = io::read_image(hostile("images/cmyk.jpg"));
  // (x * 32, y * 32, 128) through CMYK and JPEG at quality 95
  EXPECT_NEAR(pixel(cmyk, 6, 1, 0), 192, 24);
  EXPECT_NEAR(pixel(cmyk, 6, 1, 1), 32, 24);
  EXPECT_NEAR(pixel(cmyk, 6, 1, 2), 128, 24);
}

TEST(Hostile, ConfigsCannotExplodeOrNestWithoutBound) {
  EXPECT_NE(error_of([] { config::load_config_file(hostile("billion_laughs.yaml")); }).find("expands to more than"),
            std::string::npos);
  EXPECT_NE(error_of([] { config::load_config_file(hostile("deep.yaml")); }), "");
  EXPECT_NE(error_of([] { config::load_config_file(hostile("deep.json")); }).find("nests deeper than 64 levels"), std::string::npos);
  const ProcessResult r = run_vavae({"train", "--config", hostile("billion_laughs.yaml"), "--output", scratch_dir("laughs")}, timeout(60));
  EXPECT_TRUE(r.exited && r.code == 1) << r.err;
  EXPECT_LT(r.max_rss_kib, 1024 * 1024);
}

void write_gzip(const std::string& path, const std::string& header, size_t zero_bytes) {
  gzFile f = gzopen(path.c_str(), "wb9");
  gzwrite(f, header.data(), static_cast<unsigned>(header.size()));
  const std::string zeros(1 << 20, '\0');
  for (size_t done = 0; done < zero_bytes; done += zeros.size())
    gzwrite(f, zeros.data(), static_cast<unsigned>(std::min(zeros.size(), zero_bytes - done)));
  gzclose(f);
}

std::string be32(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }

TEST(Hostile, IdxHeadersAreCheckedAndGzipBombsStopEarly) {
  const std::string dir = scratch_dir("idx_hostile");
  write_gzip(dir + "/train-labels-idx1-ubyte.gz", be32(0x801) + be32(1), 1);
  // 2^32-1 images of (2^32-1)^2 pixels: the product overflows 64 bits.
  write_gzip(dir + "/train-images-idx3-ubyte.gz", be32(0x803) + be32(0xffffffffu) + be32(0xffffffffu) + be32(0xffffffffu), 0);
  EXPECT_NE(error_of([&] { data::idx_dataset(dir, "train"); }).find("overflows"), std::string::npos);
  // One 28x28 image declared, 256 MiB of zeros delivered (256 KiB compressed): reading stops at
  // the declared size instead of inflating the rest.
  write_gzip(dir + "/train-images-idx3-ubyte.gz", be32(0x803) + be32(1) + be32(28) + be32(28), 256u << 20);
  const std::string message = error_of([&] { data::idx_dataset(dir, "train"); });
  EXPECT_NE(message.find("longer than its header"), std::string::npos) << message;
}

// Inputs the fuzzers once crashed on (scripts/fuzz.sh), named after their harness: each now ends
// in an Error or loads.
TEST(Hostile, FuzzRegressionInputs) {
  size_t replayed = 0;
  for (const auto& e : fs::directory_iterator(hostile("fuzz"))) {
    const std::string path = e.path().string(), name = e.path().filename().string();
    const std::string harness = name.substr(0, name.find('-'));
    SCOPED_TRACE(name);
    if (harness == "image") error_of([&] { io::read_image(path); });
    else if (harness == "config") error_of([&] { config::train_config_from_json(config::load_config_text(read_file(path)), name); });
    else if (harness == "safetensors") error_of([&] { io::SafetensorsReader r(path); for (const auto& x : r.entries()) r.tensor(x.name); });
    else if (harness == "torch_checkpoint") error_of([&] { io::read_weights(path); });
    else if (harness == "pickle") error_of([&] { io::read_weights(path); });
    else ADD_FAILURE() << "no harness for " << name;
    ++replayed;
  }
  EXPECT_GT(replayed, 0u);
}

TEST(Hostile, NoUserFileReachesALoaderThatCanRunCode) {
  // torch::load / torch::jit::load / InputArchive run TorchScript; PyTorchStreamReader inflates
  // before checking sizes. None of them may appear in the sources.
  const std::regex forbidden(R"(torch::load\s*\(|jit::load|InputArchive|PyTorchStreamReader|pickle_load|torch::pickle_load)");
  size_t scanned = 0;
  for (const auto& e : fs::recursive_directory_iterator(std::string(VAVAE_SOURCE_DIR) + "/src")) {
    if (!e.is_regular_file()) continue;
    ++scanned;
    const std::string text = read_file(e.path().string());
    EXPECT_FALSE(std::regex_search(text, forbidden)) << e.path();
  }
  EXPECT_GT(scanned, 20u);
}

}  // namespace
}  // namespace vavae::test
