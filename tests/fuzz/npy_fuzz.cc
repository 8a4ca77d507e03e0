// .npy bytes (header, dtype, shape, data), as calibration and evaluation data are read.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/tensor_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<char> bytes(data, data + size);
  (void)qopt::ParseNpy(bytes, "fuzz.npy");
  return 0;
}
