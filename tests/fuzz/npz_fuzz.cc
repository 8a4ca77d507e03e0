// A .npz archive (zip of .npy arrays) as a data set: inputs and labels picked by name,
// lengths checked, 8-bit data scaled.
#include <cstddef>
#include <cstdint>

#include "data/dataset.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qopt::DatasetSpec spec;
  spec.path = qopt::fuzz::WriteInput(data, size, "data.npz");
  spec.format = "npz";
  (void)qopt::LoadDataset(spec);
  return 0;
}
