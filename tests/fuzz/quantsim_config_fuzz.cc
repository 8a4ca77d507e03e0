// A quantsim config file (AIMET's format plus qopt's `layers` and `bitwidth`).
#include <cstddef>
#include <cstdint>
#include <string>

#include "quant/quantsim_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)qopt::ParseQuantSimConfig(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
