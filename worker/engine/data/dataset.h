// Data sets for calibration, evaluation and fine-tuning: inputs (N, ...) as float32 and
// optional labels: integer classes (N), per-pixel classes (N, H, W), or float targets
// (N, ...) such as the images a super-resolution model should give; from IDX files (gzipped or not), .npy / .npz arrays,
// tensors saved with torch.save, or a folder of PNG / JPEG images with one sub-folder
// per class. Raw 8-bit pixels go through a Preprocess (scale, resize, centre-crop,
// channels, mean / std).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace qopt {

struct Preprocess {
  /// Applied to 8-bit pixel data before mean / std; default 1/255.
  double scale = 1.0 / 255.0;
  /// Shorter image side after resizing (bilinear), 0 = keep. Image folders only.
  int resize = 0;
  /// Square centre crop, 0 = none. Image folders only.
  int center_crop = 0;
  /// Output channels: 1 (grey), 3 (RGB) or 0 = as stored.
  int channels = 0;
  /// Per-channel mean and std after scaling; one value applies to all channels.
  std::vector<double> mean;
  std::vector<double> std;
};

struct DatasetSpec {
  std::string path;          // file, or folder for images
  std::string labels_path;   // IDX / .npy labels file, when separate
  /// "auto" (by content), "idx", "npy", "npz", "torch", "image_folder".
  std::string format = "auto";
  Preprocess preprocess;
  int64_t max_samples = 0;   // 0 = all
  bool shuffle = false;      // sample order (and which samples max_samples keeps)
  uint64_t seed = 0;
};

struct Dataset {
  at::Tensor inputs;                 // float32, first axis = samples
  std::optional<at::Tensor> labels;  // int64 classes (N) / (N, ...), or float32 targets (N, ...)
  std::vector<std::string> classes;  // image folders: class name of each label
  int64_t size() const { return inputs.size(0); }
};

struct Batch {
  at::Tensor inputs;
  std::optional<at::Tensor> labels;
};

/// Loads a data set. Errors name the file and the problem (missing, corrupt, truncated,
/// inputs and labels of different lengths, unsupported format).
absl::StatusOr<Dataset> LoadDataset(const DatasetSpec& spec);

/// Consecutive batches of `batch_size` (the last may be smaller).
std::vector<Batch> MakeBatches(const Dataset& data, int64_t batch_size);

/// Reads an IDX file (as Fashion-MNIST ships; gzipped or not) into a tensor of its
/// stored type (uint8, int8, int16, int32, float32, float64).
absl::StatusOr<at::Tensor> ReadIdx(const std::string& path);

}  // namespace qopt
