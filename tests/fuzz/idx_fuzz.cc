// An IDX file (gzipped or not) as a data set: ReadIdx, then LoadDataset's checks and
// preprocessing.
#include <cstddef>
#include <cstdint>

#include "data/dataset.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qopt::DatasetSpec spec;
  spec.path = qopt::fuzz::WriteInput(data, size, "data.idx");
  spec.format = "idx";
  (void)qopt::LoadDataset(spec);
  return 0;
}
