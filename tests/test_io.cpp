// safetensors, the torch checkpoint reader and weight loading.
#include <filesystem>
#include <fstream>

#include "fixtures.h"
#include "vavae/common/error.h"
#include "vavae/io/torch_checkpoint.h"
#include "vavae/io/image.h"
#include "vavae/io/weights.h"
#include "vavae/io/zip.h"

#include <cstring>
#include "vavae/nn/autoencoder.h"

namespace vavae::test {
namespace {

using io::NamedTensors;

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << data;
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = scratch_dir("st") + "/all.safetensors";
  torch::manual_seed(0);
  NamedTensors tensors = {
      {"f64", torch::randn({2, 3}, torch::kFloat64)},
      {"f32", torch::randn({4}, torch::kFloat32)},
      {"f16", torch::randn({3, 1}).to(torch::kFloat16)},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"i64", torch::tensor({int64_t{-1}, int64_t{0}, int64_t{1} << 40}, torch::kInt64)},
      {"i32", torch::tensor({-7, 7}, torch::kInt32)},
      {"i16", torch::tensor({-300, 300}, torch::kInt16)},
      {"i8", torch::tensor({-5, 5}, torch::kInt8)},
      {"u8", torch::tensor({0, 255}, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true}, torch::kBool)},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
      {"transposed", torch::arange(6, torch::kFloat32).view({2, 3}).t()},
  };
  io::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "round trip"}});
  io::SafetensorsReader reader(path);
  EXPECT_EQ(reader.metadata().at("note"), "round trip");
  ASSERT_EQ(reader.entries().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const torch::Tensor back = reader.tensor(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }
  EXPECT_EQ(reader.entry("bf16").dtype, "BF16");
  EXPECT_EQ(reader.entry("bool").dtype, "BOOL");
}

TEST(Safetensors, RejectsMalformedHeaders) {
  const std::string dir = scratch_dir("st_bad");
  const std::string f = dir + "/bad.safetensors";
  auto check = [&](const std::string& header, const std::string& data, std::initializer_list<std::string> needles) {
    write_raw(f, header, data);
    expect_error([&] { io::SafetensorsReader r(f); }, needles);
  };
  check("{not json", "", {"bad.safetensors", "not valid JSON"});
  check("[1,2]", "", {"not a JSON object"});
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
        std::string(12, '\0'), {"tensor 'b'", "overlaps 'a'"});
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(4, '\0'), {"tensor 'a'", "past the data section"});
  check(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'), {"tensor 'a'", "needs 12"});
  check(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'), {"tensor 'a'", "unsupported dtype 'Q4'"});
  check(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'), {"tensor 'a'", "shape entry -2"});
  check(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0'), {"tensor 'a'", "reversed"});
  check(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0'), {"tensor 'a'", "data_offsets"});
  check(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'), {"tensor 'a'", "gap"});
  check(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0'), {"cover 4"});
  check(R"({"__metadata__":{"k":1}})", "", {"__metadata__ value 'k'"});

  { std::ofstream(f, std::ios::binary) << "abc"; }
  expect_error([&] { io::SafetensorsReader r(f); }, {"bad.safetensors", "shorter than the 8-byte header"});
  {
    std::ofstream out(f, std::ios::binary);
    const uint64_t huge = 1ull << 40;
    out.write(reinterpret_cast<const char*>(&huge), 8);
  }
  expect_error([&] { io::SafetensorsReader r(f); }, {"exceeds the 100 MiB cap"});
  {
    std::ofstream out(f, std::ios::binary);
    const uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  expect_error([&] { io::SafetensorsReader r(f); }, {"runs past the end of the file"});
  expect_error([&] { io::SafetensorsReader r(dir + "/absent.safetensors"); }, {"absent.safetensors", "cannot open"});
}

// Every torch.save fixture gives exactly the tensors of its safetensors twin.
class CheckpointTwin : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointTwin, LoadsTheSameTensorsAsItsSafetensorsTwin) {
  const std::string stem = fixture("checkpoints/" + GetParam());
  const std::string twin = stem.substr(0, stem.rfind('.')) + ".safetensors";
  const io::WeightFile file = io::read_weights(stem);
  io::SafetensorsReader expected(twin);
  ASSERT_EQ(file.tensors.size(), expected.entries().size());
  for (const auto& [name, t] : file.tensors) {
    ASSERT_TRUE(expected.contains(name)) << name;
    const torch::Tensor e = expected.tensor(name);
    EXPECT_EQ(t.scalar_type(), e.scalar_type()) << name;
    EXPECT_EQ(t.sizes(), e.sizes()) << name;
    EXPECT_TRUE(torch::equal(t.contiguous(), e)) << name;  // bit for bit
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CheckpointTwin,
                         ::testing::Values("state_dict.pt", "legacy.pth", "lightning.ckpt", "views.pt", "malicious.pt"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

TEST(Npz, ImagesAreArr0AsNumpyWritesAUint8Array) {
  std::vector<io::Image> images(3);
  for (size_t i = 0; i < images.size(); ++i) {
    images[i].height = 5, images[i].width = 7;
    for (int p = 0; p < 5 * 7 * 3; ++p) images[i].rgb.push_back(static_cast<uint8_t>(i * 100 + p));
  }
  const std::string path = scratch_dir("npz") + "/samples.npz";
  io::write_npz_images(path, images);
  const io::ZipArchive zip(std::make_shared<io::MappedFile>(path));
  ASSERT_EQ(zip.entries().size(), 1u);
  EXPECT_EQ(zip.entries()[0].name, "arr_0.npy");
  const auto bytes = zip.read(zip.entries()[0], 1 << 20);
  const std::string npy(reinterpret_cast<const char*>(bytes.data), bytes.size);
  ASSERT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_length = static_cast<uint8_t>(npy[8]) | (static_cast<size_t>(static_cast<uint8_t>(npy[9])) << 8);
  EXPECT_EQ((10 + header_length) % 64, 0u);
  const std::string header = npy.substr(10, header_length);
  EXPECT_NE(header.find("'descr': '|u1'"), std::string::npos);
  EXPECT_NE(header.find("'shape': (3, 5, 7, 3)"), std::string::npos);
  EXPECT_EQ(header.back(), '\n');
  ASSERT_EQ(npy.size(), 10 + header_length + 3 * 5 * 7 * 3);
  for (size_t i = 0; i < images.size(); ++i)
    EXPECT_EQ(0, std::memcmp(npy.data() + 10 + header_length + i * 105, images[i].rgb.data(), 105));
}

// LightningDiT's train.py saves {'model', 'ema', 'opt', 'config'}; inference.py loads 'ema'.
TEST(TorchCheckpoint, APreferredKeyPicksItsDictBeforeTheDefaultOrder) {
  const std::string path = std::string(VAVAE_SOURCE_DIR) + "/tests/data/model_and_ema.pt";
  const io::WeightFile plain = io::read_weights(path);
  EXPECT_EQ(plain.location, "model");
  ASSERT_EQ(plain.tensors.size(), 1u);
  EXPECT_EQ(plain.tensors[0].second.sum().item<float>(), 0.0f);
  const io::WeightFile ema = io::read_weights(path, {"ema"});
  EXPECT_EQ(ema.location, "ema");
  ASSERT_EQ(ema.tensors.size(), 1u);
  EXPECT_EQ(ema.tensors[0].second.sum().item<float>(), 3.0f);
}

TEST(TorchCheckpoint, NeverRunsTheMaliciousPayload) {
  const char* marker = "/tmp/vavae-pwned-marker";
  std::filesystem::remove(marker);
  auto top = io::read_torch_checkpoint(fixture("checkpoints/malicious.pt"));
  EXPECT_FALSE(std::filesystem::exists(marker));
  bool found_inert_call = false;
  for (const auto& [k, v] : top->entries)
    if (k->text == "payload") found_inert_call = v->kind == io::pickle::Value::Kind::Object && v->text == "posix.system";
  EXPECT_TRUE(found_inert_call) << "the payload should be kept as an inert placeholder of posix.system";
}

TEST(TorchCheckpoint, KeepsViewsSharingTheirStorage) {
  auto top = io::read_torch_checkpoint(fixture("checkpoints/views.pt"));
  std::map<std::string, torch::Tensor> t;
  for (const auto& [k, v] : top->entries)
    if (v->kind == io::pickle::Value::Kind::Tensor) t[k->text] = v->tensor;
  ASSERT_TRUE(t.count("row_slice") && t.count("transposed"));
  EXPECT_EQ(t["row_slice"].storage().data(), t["transposed"].storage().data());
  EXPECT_FALSE(t["transposed"].is_contiguous());
}

TEST(TorchCheckpoint, RejectsDamagedFiles) {
  const std::string dir = scratch_dir("ckpt_bad");
  auto copy_prefix = [&](const std::string& from, const std::string& to, size_t bytes) {
    std::ifstream in(from, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(to, std::ios::binary) << data.substr(0, bytes);
  };
  copy_prefix(fixture("checkpoints/state_dict.pt"), dir + "/truncated.pt", 2000);
  expect_error([&] { io::read_weights(dir + "/truncated.pt"); }, {"truncated.pt"});
  copy_prefix(fixture("checkpoints/legacy.pth"), dir + "/truncated.pth", 3000);
  expect_error([&] { io::read_weights(dir + "/truncated.pth"); }, {"truncated.pth"});
  { std::ofstream(dir + "/text.pt") << "hello, not a checkpoint"; }
  expect_error([&] { io::read_weights(dir + "/text.pt"); }, {"text.pt"});
}

nn::AutoencoderConfig tiny_config() {
  nn::AutoencoderConfig c;
  c.ch = 32;
  c.ch_mult = {1, 2};
  c.num_res_blocks = 1;
  c.attn_resolutions = {8};
  c.z_channels = 4;
  c.embed_dim = 4;
  c.resolution = 16;
  return c;
}

TEST(Weights, DetectsPrefixConvertsHalfAndReportsForeignKeys) {
  torch::manual_seed(1);
  nn::AutoencoderKL source(tiny_config()), target(tiny_config());
  NamedTensors saved;
  for (const auto& [k, t] : io::state_dict(*source)) saved.emplace_back("first_stage_model." + k, t.to(torch::kFloat16));
  saved.emplace_back("loss.logvar", torch::zeros({}));
  saved.emplace_back("loss.discriminator.main.0.weight", torch::zeros({2}));
  saved.emplace_back("foundation_model.model.cls_token", torch::zeros({1, 1, 8}));
  const std::string path = scratch_dir("weights") + "/prefixed.safetensors";
  io::write_safetensors(path, saved);
  const io::LoadReport report = io::load_into(*target, io::read_weights(path));
  EXPECT_EQ(report.prefix, "first_stage_model.");
  EXPECT_EQ(report.loaded, io::state_dict(*target).size());
  EXPECT_EQ(report.ignored.at("loss"), 2u);
  EXPECT_EQ(report.ignored.at("foundation_model"), 1u);
  EXPECT_NE(report.summary().find("loss.* (2)"), std::string::npos) << report.summary();
  EXPECT_TRUE(torch::equal(target->decoder->conv_out->weight, source->decoder->conv_out->weight.to(torch::kFloat16).to(torch::kFloat32)));
}

TEST(Weights, MissingAndMismatchedKeysFailByNameUnlessPartial) {
  nn::AutoencoderKL model(tiny_config());
  NamedTensors saved = io::state_dict(*model);
  saved.erase(std::remove_if(saved.begin(), saved.end(), [](const auto& kv) { return kv.first == "quant_conv.bias"; }), saved.end());
  const std::string dir = scratch_dir("weights_bad");
  io::write_safetensors(dir + "/missing.safetensors", saved);
  expect_error([&] { io::load_into(*model, io::read_weights(dir + "/missing.safetensors")); }, {"missing.safetensors", "quant_conv.bias"});
  io::LoadOptions partial;
  partial.partial = true;
  const auto report = io::load_into(*model, io::read_weights(dir + "/missing.safetensors"), partial);
  EXPECT_EQ(report.missing, std::vector<std::string>{"quant_conv.bias"});

  for (auto& [k, t] : saved)
    if (k == "decoder.conv_out.weight") t = torch::zeros({3, 5, 3, 3});
  io::write_safetensors(dir + "/shape.safetensors", saved);
  expect_error([&] { io::load_into(*model, io::read_weights(dir + "/shape.safetensors")); },
               {"shape.safetensors", "decoder.conv_out.weight [3,5,3,3] vs model [3,32,3,3]"});
  EXPECT_EQ(io::load_into(*model, io::read_weights(dir + "/shape.safetensors"), partial).mismatched.size(), 1u);
}

}  // namespace
}  // namespace vavae::test
