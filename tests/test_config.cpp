// The config schema: upstream's files as they are, the resolved config round trip, provenance,
// and the README's key table generated from the same declarations.
#include <filesystem>
#include <fstream>

#include "fixtures.h"
#include "process.h"
#include "vavae/common/error.h"
#include "vavae/config/config_file.h"
#include "vavae/config/describe.h"
#include "vavae/config/train_config.h"

namespace vavae::test {
namespace {

std::string source_file(const std::string& relative) { return std::string(VAVAE_SOURCE_DIR) + "/" + relative; }

config::TrainConfig read(const std::string& relative, const std::vector<std::string>& sets = {}) {
  nlohmann::json tree = config::load_config_file(source_file(relative));
  const auto paths = config::apply_overrides(tree, sets);
  return config::train_config_from_json(tree, relative, paths);
}

bool ignored(const config::TrainConfig& c, const std::string& path) {
  for (const auto& [p, reason] : c.ignored)
    if (p == path) return !reason.empty();
  return false;
}

void expect_released_model_and_data(const config::TrainConfig& c) {
  EXPECT_EQ(c.autoencoder.ch, 128);
  EXPECT_EQ(c.autoencoder.ch_mult, (std::vector<int64_t>{1, 1, 2, 2, 4}));
  EXPECT_EQ(c.autoencoder.num_res_blocks, 2);
  EXPECT_EQ(c.autoencoder.attn_resolutions, std::vector<int64_t>{16});
  EXPECT_EQ(c.autoencoder.z_channels, 32);
  EXPECT_EQ(c.autoencoder.embed_dim, 32);
  EXPECT_EQ(c.learning_rate, 1e-4);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.objective.disc_start, 5001);
  EXPECT_EQ(c.objective.kl_weight, 1e-6);
  EXPECT_EQ(c.objective.disc_weight, 0.5);
  EXPECT_EQ(c.objective.perceptual_weight, 1.0);  // upstream's default
  EXPECT_EQ(c.train.source, "/path/to/imagenet/ILSVRC2012_train/data");
  EXPECT_EQ(c.validation.source, "/path/to/imagenet/ILSVRC2012_validation/data");
  EXPECT_TRUE(c.train.random_crop);
  EXPECT_FALSE(c.train.flip);
  for (const char* path : {"ckpt_path", "model.params.monitor", "data.target", "data.params.wrap", "lightning.trainer.devices",
                           "lightning.trainer.num_nodes", "lightning.trainer.strategy", "lightning.trainer.accelerator"})
    EXPECT_TRUE(ignored(c, path)) << path;
}

TEST(UpstreamConfigs, TheVfDinov2RecipeReadsAsUpstreamMeantIt) {
  const config::TrainConfig c = read("configs/upstream/f16d32_vfdinov2.yaml");
  expect_released_model_and_data(c);
  EXPECT_TRUE(c.use_vf);
  EXPECT_EQ(c.foundation.use_vf, "dinov2");
  EXPECT_TRUE(c.reverse_proj);
  EXPECT_EQ(c.objective.vf_weight, 0.1);
  EXPECT_TRUE(c.objective.adaptive_vf);
  EXPECT_EQ(c.objective.vf.distmat_margin, 0.25);
  EXPECT_EQ(c.objective.vf.cos_margin, 0.5);
  EXPECT_EQ(c.trainer.max_epochs, 50);
  EXPECT_TRUE(c.stages.empty());  // one 50-epoch run
  EXPECT_EQ(c.provenance.at("lightning.trainer.max_epochs"), "file");
}

TEST(UpstreamConfigs, TheLdmBaselineHasNoVfLoss) {
  const config::TrainConfig c = read("configs/upstream/f16d32_ldm.yaml");
  expect_released_model_and_data(c);
  EXPECT_FALSE(c.use_vf);
  EXPECT_EQ(c.trainer.max_epochs, 50);
}

TEST(UpstreamConfigs, TheLongTemplateNamesEveryEmptyKeyAndPassesOnceTheyAreGiven) {
  std::string message;
  try {
    read("configs/upstream/f16d32_vfdinov2_long.yaml");
  } catch (const Error& e) {
    message = e.what();
  }
  for (const char* key : {"model.params.lossconfig.params.disc_start", "model.params.lossconfig.params.vf_weight",
                          "model.params.lossconfig.params.distmat_margin", "model.params.lossconfig.params.cos_margin",
                          "lightning.trainer.max_epochs"})
    EXPECT_NE(message.find(key), std::string::npos) << key << " not named in: " << message;
  EXPECT_NE(message.find("5 keys are empty"), std::string::npos) << message;
  // Stage 1 of the released recipe: weight 0.5, no margins, 100 epochs.
  const config::TrainConfig c = read("configs/upstream/f16d32_vfdinov2_long.yaml",
                                     {"model.params.lossconfig.params.disc_start=5001", "model.params.lossconfig.params.vf_weight=0.5",
                                      "model.params.lossconfig.params.distmat_margin=0", "model.params.lossconfig.params.cos_margin=0",
                                      "lightning.trainer.max_epochs=100"});
  EXPECT_EQ(c.objective.vf_weight, 0.5);
  EXPECT_EQ(c.trainer.max_epochs, 100);
  EXPECT_EQ(c.provenance.at("model.params.lossconfig.params.vf_weight"), "--set");
}

TEST(UpstreamConfigs, DryRunPrintsEveryKeyWithItsOriginAndLoadsNothing) {
  const ProcessResult r = run_vavae({"train", "--config", source_file("configs/upstream/f16d32_vfdinov2.yaml"), "--dry-run", "--set",
                                     "trainer.seed=7"});
  ASSERT_EQ(r.code, 0) << r.err;  // no DINOv2, LPIPS or ImageNet here: nothing was loaded
  auto line_of = [&](const std::string& key) {
    const auto at = r.out.find(key + " ");
    return at == std::string::npos ? std::string() : r.out.substr(at, r.out.find('\n', at) - at);
  };
  EXPECT_NE(line_of("model.params.lossconfig.params.cos_margin").find("0.5  (file)"), std::string::npos) << r.out;
  EXPECT_NE(line_of("trainer.seed").find("7  (--set)"), std::string::npos) << r.out;
  EXPECT_NE(line_of("model.params.lossconfig.params.logvar_init").find("(default)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ignored: lightning.trainer.devices: "), std::string::npos) << r.out;
  const ProcessResult long_template =
      run_vavae({"train", "--config", source_file("configs/upstream/f16d32_vfdinov2_long.yaml"), "--dry-run"});
  EXPECT_EQ(long_template.code, 1);
  EXPECT_NE(long_template.err.find("5 keys are empty"), std::string::npos) << long_template.err;
}

// The resolved config (config.yaml of a run) reads back to the same config, and every shipped
// config survives the trip.
// A config named after an upstream file holds that file's recipe.
TEST(ConfigSchema, TheMirrorsMatchTheUpstreamFilesTheyAreNamedAfter) {
  for (const char* name : {"f16d32_vfdinov2.yaml", "f16d32_ldm.yaml"}) {
    SCOPED_TRACE(name);
    const config::TrainConfig mirror = read(std::string("configs/") + name);
    const config::TrainConfig upstream = read(std::string("configs/upstream/") + name);
    EXPECT_EQ(mirror.stages.size(), 0u);
    EXPECT_EQ(mirror.trainer.max_epochs, upstream.trainer.max_epochs);
    EXPECT_EQ(mirror.batch_size, upstream.batch_size);
    EXPECT_EQ(mirror.learning_rate, upstream.learning_rate);
    EXPECT_EQ(mirror.use_vf, upstream.use_vf);
    EXPECT_EQ(mirror.train.flip, upstream.train.flip);
    EXPECT_EQ(mirror.train.random_crop, upstream.train.random_crop);
    config::SchemaWriter a, b;
    loss::ObjectiveConfig mo = mirror.objective, uo = upstream.objective;
    config::describe_objective(mo, a, "");
    config::describe_objective(uo, b, "");
    EXPECT_EQ(a.tree, b.tree) << "loss settings";
    config::SchemaWriter am, bm;
    nn::AutoencoderConfig ma = mirror.autoencoder, ua = upstream.autoencoder;
    config::describe_autoencoder(ma, am, "");
    config::describe_autoencoder(ua, bm, "");
    EXPECT_EQ(am.tree, bm.tree) << "model shape";
  }
}

TEST(ConfigSchema, TheResolvedConfigRoundTrips) {
  for (const char* file : {"configs/fashion_mnist_vf.yaml", "configs/f16d32_vfdinov2.yaml", "configs/f16d32_vfdinov2_released.yaml",
                           "configs/f16d32_ldm.yaml",
                           "configs/upstream/f16d32_vfdinov2.yaml", "configs/upstream/f16d32_ldm.yaml"}) {
    SCOPED_TRACE(file);
    const config::TrainConfig first = read(file);
    const config::TrainConfig second = config::train_config_from_json(config::load_config_text(config::to_yaml(first.resolved)), "again");
    EXPECT_EQ(first.resolved, second.resolved);
    ASSERT_EQ(first.stages.size(), second.stages.size());
    for (size_t i = 0; i < first.stages.size(); ++i) {
      EXPECT_EQ(first.stages[i].objective.vf_weight, second.stages[i].objective.vf_weight);
      EXPECT_EQ(first.stages[i].objective.vf.cos_margin, second.stages[i].objective.vf.cos_margin);
      EXPECT_EQ(first.stages[i].overridden, second.stages[i].overridden);
    }
  }
}

TEST(ConfigSchema, StagesResolveToCompleteObjectivesAtParseTime) {
  const config::TrainConfig c = read("configs/f16d32_vfdinov2_released.yaml");
  ASSERT_EQ(c.stages.size(), 3u);
  for (const auto& s : c.stages) EXPECT_TRUE(s.restart) << s.name;
  EXPECT_EQ(c.stages[0].objective.disc_start, 5001);
  EXPECT_EQ(c.stages[1].objective.disc_start, 1);
  EXPECT_EQ(c.stages[0].objective.vf_weight, 0.5);
  EXPECT_EQ(c.stages[0].objective.vf.cos_margin, 0.0);
  EXPECT_EQ(c.stages[2].objective.vf.cos_margin, 0.5);
  EXPECT_EQ(c.stages[2].objective.vf.distmat_margin, 0.25);
  EXPECT_EQ(c.stages[1].objective.kl_weight, c.objective.kl_weight);  // inherited from the run's lossconfig
}

// The README's key table is the generated one (`vavae train --keys`), so it cannot drift.
TEST(ConfigSchema, TheReadmeKeyTableIsTheGeneratedOne) {
  const std::string readme = read_file(source_file("README.md"));
  const std::string table = config::keys_table();
  EXPECT_NE(readme.find(table), std::string::npos) << "regenerate the README's key table with: vavae train --keys\n" << table;
}

}  // namespace
}  // namespace vavae::test
