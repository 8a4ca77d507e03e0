// Every recipe step, registered here once. A step Foo (the oneof field `foo` of
// qopt.v1.Step) has its torch-free spec `FooSpec()` in common/steps/foo_check.cc, which the
// server links, and its run `RunFoo` in worker/engine/recipe/steps/foo.cc; both
// registries expand this list, so a new step touches recipe.proto, its two files and
// one line here.
#pragma once

#define QOPT_FOR_EACH_STEP(X) \
  X(SpatialSvd)               \
  X(WeightSvd)                \
  X(ChannelPruning)           \
  X(FineTune)                 \
  X(FoldBatchNorm)            \
  X(CrossLayerEqualization)   \
  X(Calibrate)                \
  X(AdaRound)                 \
  X(BiasCorrection)           \
  X(AutoQuant)                \
  X(Qat)                      \
  X(Analyze)                  \
  X(MixedPrecision)           \
  X(Evaluate)                 \
  X(Export)
