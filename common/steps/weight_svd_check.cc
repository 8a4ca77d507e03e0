// weight_svd: splits convolutions and linear layers into a rank-r pair.
#include "steps/compression_check.h"

namespace qopt {

const StepSpec& WeightSvdSpec() {
  static const StepSpec spec =
      CompressionStep<v1::WeightSvdStep, &v1::Step::weight_svd, &v1::Step::mutable_weight_svd>::Spec(
          v1::Step::kWeightSvd);
  return spec;
}

}  // namespace qopt
