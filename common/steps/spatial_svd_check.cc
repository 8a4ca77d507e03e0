// spatial_svd: splits k x k convolutions into a vertical and a horizontal one.
#include "steps/compression_check.h"

namespace qopt {

const StepSpec& SpatialSvdSpec() {
  static const StepSpec spec =
      CompressionStep<v1::SpatialSvdStep, &v1::Step::spatial_svd, &v1::Step::mutable_spatial_svd>::Spec(
          v1::Step::kSpatialSvd);
  return spec;
}

}  // namespace qopt
