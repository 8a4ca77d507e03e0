// Data sets: every format gives the same samples and labels; bad data gives clear errors.
#include "data/dataset.h"

#include <ATen/ATen.h>

#include "data/tensor_file.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::SourcePath;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kFashionMnist[] = "/usr/share/datasets/fashion-mnist";

DatasetSpec Spec(const std::string& file, const std::string& labels = "") {
  DatasetSpec s;
  s.path = Fixture(file);
  if (!labels.empty()) s.labels_path = Fixture(labels);
  return s;
}

// The reference: fmt_inputs.npy / fmt_labels.npy, written from the same pixels.
Dataset Reference() {
  auto d = LoadDataset(Spec("fmt_inputs.npy", "fmt_labels.npy"));
  EXPECT_THAT(d, IsOk());
  return *d;
}

void ExpectSame(const Dataset& got, const Dataset& want, const std::string& what) {
  ASSERT_EQ(got.inputs.sizes(), want.inputs.sizes()) << what;
  EXPECT_TRUE(at::allclose(got.inputs, want.inputs, 1e-6, 1e-7)) << what;
  ASSERT_TRUE(got.labels.has_value()) << what;
  EXPECT_TRUE(at::equal(*got.labels, *want.labels)) << what;
}

TEST(DatasetTest, EveryFormatReadsTheSameSamples) {
  const Dataset want = Reference();
  EXPECT_EQ(want.inputs.sizes(), (std::vector<int64_t>{12, 1, 8, 8}));
  ExpectSame(*LoadDataset(Spec("fmt.npz")), want, "npz");
  ExpectSame(*LoadDataset(Spec("fmt_compressed.npz")), want, "compressed npz");
  ExpectSame(*LoadDataset(Spec("fmt_pair.pt")), want, "torch.save tuple");
  ExpectSame(*LoadDataset(Spec("fmt_dict.pt")), want, "torch.save dict");
  ExpectSame(*LoadDataset(Spec("fmt-images-idx3-ubyte", "fmt-labels-idx1-ubyte")), want, "idx");
  ExpectSame(*LoadDataset(Spec("fmt-images-idx3-ubyte.gz", "fmt-labels-idx1-ubyte")), want,
             "gzipped idx");
}

TEST(DatasetTest, ImageFolderUsesSubFoldersAsClasses) {
  const Dataset want = Reference();
  auto got = LoadDataset(Spec("fmt_images"));
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->classes, (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  // Files are read class by class: samples 0, 3, 6, 9 are class_0, and so on.
  const at::Tensor order = at::tensor({0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11}, at::kLong);
  Dataset reordered{want.inputs.index_select(0, order), want.labels->index_select(0, order), {}};
  // PNG decoding is lossless; images are decoded as RGB unless channels = 1.
  DatasetSpec grey = Spec("fmt_images");
  grey.preprocess.channels = 1;
  ExpectSame(*LoadDataset(grey), reordered, "grey png folder");
  EXPECT_EQ(got->inputs.size(1), 3);
}

TEST(DatasetTest, ImagePreprocessingResizesCropsAndNormalizes) {
  DatasetSpec s = Spec("fmt_images_sizes");
  EXPECT_THAT(LoadDataset(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("set preprocess resize / center_crop")));
  s.preprocess.resize = 10;
  s.preprocess.center_crop = 8;
  s.preprocess.mean = {0.5, 0.5, 0.5};
  s.preprocess.std = {0.25};
  auto d = LoadDataset(s);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->inputs.sizes(), (std::vector<int64_t>{12, 3, 8, 8}));
  // Pixels in [0, 1] normalized by (x - 0.5) / 0.25 lie in [-2, 2].
  EXPECT_GE(d->inputs.min().item<double>(), -2.0 - 1e-5);
  EXPECT_LE(d->inputs.max().item<double>(), 2.0 + 1e-5);
  s.preprocess.mean = {0.5, 0.5};
  EXPECT_THAT(LoadDataset(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("mean has 2 values for 3 channels")));
}

TEST(DatasetTest, FashionMnistFromDebian) {
  DatasetSpec s;
  s.path = std::string(kFashionMnist) + "/t10k-images-idx3-ubyte.gz";
  s.labels_path = std::string(kFashionMnist) + "/t10k-labels-idx1-ubyte.gz";
  s.preprocess.mean = {0.2860};
  s.preprocess.std = {0.3530};
  auto d = LoadDataset(s);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->inputs.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(d->labels->bincount().eq(1000).all().item<bool>(), true) << "1000 per class";
  EXPECT_NEAR(d->inputs.mean().item<double>(), 0.0, 0.05);
}

TEST(DatasetTest, SampleLimitAndSeededShuffle) {
  DatasetSpec s = Spec("fmt.npz");
  s.max_samples = 5;
  auto first = LoadDataset(s);
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->size(), 5);
  EXPECT_TRUE(at::equal(*first->labels, at::tensor({0, 1, 2, 0, 1}, at::kLong)));
  s.shuffle = true;
  s.seed = 7;
  auto a = LoadDataset(s), b = LoadDataset(s);
  s.seed = 8;
  auto c = LoadDataset(s);
  ASSERT_THAT(a, IsOk());
  EXPECT_TRUE(at::equal(a->inputs, b->inputs)) << "same seed, same samples";
  EXPECT_FALSE(at::equal(a->inputs, c->inputs)) << "other seed, other samples";
  EXPECT_FALSE(at::equal(a->inputs, first->inputs));
}

TEST(DatasetTest, BatchesKeepLabels) {
  auto d = LoadDataset(Spec("fmt.npz"));
  ASSERT_THAT(d, IsOk());
  const auto batches = MakeBatches(*d, 5);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[2].inputs.size(0), 2);
  ASSERT_TRUE(batches[2].labels.has_value());
  EXPECT_EQ(batches[2].labels->size(0), 2);
}

TEST(DatasetTest, DenseLabelsKeepTheirShape) {
  // Float labels are targets (a super-resolution model's images); integer labels with more
  // than one axis are per-pixel classes.
  auto d = LoadDataset(Spec("fmt_inputs.npy", "fmt_inputs.npy"));
  ASSERT_THAT(d, IsOk());
  ASSERT_TRUE(d->labels.has_value());
  EXPECT_EQ(d->labels->scalar_type(), at::kFloat);
  EXPECT_EQ(d->labels->sizes(), d->inputs.sizes());
  const auto batches = MakeBatches(*d, 5);
  EXPECT_EQ(batches[1].labels->sizes(), batches[1].inputs.sizes());
}

TEST(DatasetTest, BadDataGivesClearErrors) {
  const std::vector<std::pair<DatasetSpec, std::string>> cases = {
      {Spec("nope.npz"), "data file not found"},
      {Spec("fmt-truncated-idx3-ubyte"), "truncated IDX data"},
      {Spec("fmt-corrupt.gz"), "corrupt gzip data"},
      {Spec("fmt_inputs.npy", "fmt_labels_short.npy"), "10 labels for 12 samples"},
      {Spec("fmt_images_corrupt"), "broken.png: corrupt PNG"},
      {Spec("not_torchscript.pt"), "unknown data format"},
      {Spec("calib_truncated.npy"), "truncated .npy"},
  };
  for (const auto& [spec, message] : cases) {
    EXPECT_THAT(LoadDataset(spec), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << spec.path;
  }
  DatasetSpec wrong = Spec("fmt.npz");
  wrong.format = "csv";
  EXPECT_THAT(LoadDataset(wrong), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("unknown data format 'csv'")));
}

// Inputs the data fuzzers found (tests/fuzz/corpus/*/regress-*), kept as tests too.
TEST(DatasetTest, FuzzFoundFilesAreErrors) {
  const auto corpus = [](const std::string& name) {
    DatasetSpec spec;
    spec.path = SourcePath("tests/fuzz/corpus/" + name);
    return spec;
  };
  // A zero dimension beside (2^32-1)^3: size 0, but strides that overflow int64_t.
  EXPECT_FALSE(DenseBytes({0, 4294967295, 4294967295, 4294967295}, 1).has_value());
  EXPECT_EQ(DenseBytes({0, 3}, 4), std::optional<size_t>(0));
  EXPECT_THAT(LoadDataset(corpus("idx/regress-stride-overflow.idx")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not a tensor this file can hold")));
  // A zip entry that claims 2.5 GB uncompressed is read only as far as its data goes.
  EXPECT_THAT(LoadDataset(corpus("npz/regress-entry-size-lie.npz")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("corrupt archive")));
  // An empty array has no storage to copy into.
  auto bytes = ReadFileBytes(SourcePath("tests/fuzz/corpus/npy/regress-empty-shape.npy"));
  ASSERT_THAT(bytes, IsOk());
  auto empty = ParseNpy(*bytes, "empty.npy");
  ASSERT_THAT(empty, IsOk());
  EXPECT_EQ(empty->numel(), 0);
}

}  // namespace
}  // namespace qopt
