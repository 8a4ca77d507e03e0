// Mixed precision (AIMET's AMP): a bitwidth candidate per quantizer group for the lowest
// bit-ops whose score stays within an allowed drop. Every group starts at the largest
// candidate; phase 1 scores each group at each other candidate with the rest at the
// largest and sorts these by score; phase 2 lowers groups in that order and binary-searches
// the longest prefix that still meets the target, giving a pareto list of (relative
// bit-ops, score).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "analysis/quant_analyzer.h"
#include "data/dataset.h"
#include "quant/quantsim.h"

namespace qopt {

struct BitCandidate {
  int activation_bits = 8;
  int param_bits = 8;
  /// "W4A8".
  std::string Name() const;
};

/// Bit-ops of the conv and linear layers of `sim` at its bitwidths now: per layer, its MACs
/// (`macs` by layer name; layers not there count none) × the bits of its weight quantizer ×
/// the bits of the activation quantizer before its input (through ReLUs, clips, max pools
/// and reshapes). A weight or input that no enabled quantizer covers counts 32 bits.
double BitOps(const QuantSim& sim, const std::map<std::string, int64_t>& macs);

/// Phase 1: group `group` at candidate `candidate`, the others at the largest.
struct GroupScore {
  int group = 0;
  int candidate = 0;
  double score = 0.0;
  double relative_bitops = 0.0;
};

/// One configuration phase 2 scored: the first `lowered` entries of its order applied.
struct ParetoPoint {
  int lowered = 0;
  double relative_bitops = 0.0;
  double score = 0.0;
  bool meets_target = false;
};

struct MixedPrecisionOptions {
  std::vector<BitCandidate> candidates;  // two or more, distinct
  /// Below the floating-point model's task figure (top-1 or mIoU as a fraction, PSNR in
  /// dB), or in dB below the largest candidate's output SQNR when the batches have no labels.
  double allowed_drop = 0.01;
  TaskMetric metric = TaskMetric::kAuto;
  size_t num_batches = 0;  // 0 = all
  /// Further phase-2 configurations spread evenly along its order (0..64).
  int curve_points = 0;
  /// Multiply-accumulates per layer name (see CountCost).
  std::map<std::string, int64_t> macs;
};

/// Scores a search already measured (an interrupted run of the same step): phase 1 by
/// (group layer, candidate name), phase-2 configurations by ConfigKey.
struct MixedPrecisionCache {
  std::map<std::pair<std::string, std::string>, double> phase1;
  std::map<std::string, double> configs;
};

struct MixedPrecisionResult {
  std::string score;  // "top1", "psnr_db", "miou" or "output_sqnr_db" (see SimScorer)
  double fp32 = kNotMeasured;
  double target = 0.0;
  std::vector<BitCandidate> candidates;
  int largest = 0;  // the candidate every group starts at
  /// Bit-ops of the simulation as the search found it; every relative figure is against it.
  double reference_bitops = 0.0;
  double largest_score = 0.0, largest_relative_bitops = 0.0;
  std::vector<QuantizerGroup> groups;  // forward order
  std::vector<int> choice;             // candidate index per group
  double chosen_score = 0.0, chosen_relative_bitops = 0.0;
  bool met_target = false;  // false: even the largest candidate misses it, and is kept
  std::vector<GroupScore> phase1;  // groups in forward order
  std::vector<int> order;          // phase 2's order: indexes into phase1
  std::vector<ParetoPoint> pareto;  // by relative bit-ops, largest first
  int evaluations = 0;  // runs of the simulation over the batches (not counting cached scores)
  int cached = 0;       // scores taken from the cache
  double eval_seconds = 0.0;
  int64_t samples = 0;
};

/// The key of a configuration (a candidate index per group) in MixedPrecisionCache.
std::string ConfigKey(const std::vector<BitCandidate>& candidates, const std::vector<int>& choice);

struct MixedPrecisionCallbacks {
  std::function<absl::Status(double fraction, const std::string& message)> progress;
  /// After phase 1 scored every candidate of group `group` (entries in result.phase1).
  std::function<absl::Status(const MixedPrecisionResult& result, int group)> on_group;
  /// After phase 2 scored a configuration.
  std::function<absl::Status(const ParetoPoint& point)> on_point;
  /// After each new score, with every score measured or cached so far.
  std::function<absl::Status(const MixedPrecisionCache& cache)> on_score;
};

/// Searches a calibrated `sim` on `batches` and leaves it at the chosen mix. Activation
/// quantizers must have calibration statistics (FailedPrecondition otherwise); bias
/// quantizers keep their bitwidth.
absl::StatusOr<MixedPrecisionResult> ChooseMixedPrecision(QuantSim& sim, const std::vector<Batch>& batches,
                                                          const MixedPrecisionOptions& options,
                                                          const MixedPrecisionCache& cache = {},
                                                          const MixedPrecisionCallbacks& callbacks = {});

}  // namespace qopt
