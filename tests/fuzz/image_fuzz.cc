// One image file (PNG or JPEG, told apart by its signature) in an image-folder data
// set, decoded, resized, centre-cropped and normalized as an ImageNet-style recipe asks.
#include <cstddef>
#include <cstdint>

#include "data/dataset.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qopt::DatasetSpec spec;
  qopt::fuzz::WriteInput(data, size, "images/class0/image.png");
  spec.path = (qopt::fuzz::ScratchDir() / "images").string();
  spec.format = "image_folder";
  spec.preprocess.resize = 4;
  spec.preprocess.center_crop = 4;
  spec.preprocess.channels = 3;
  spec.preprocess.mean = {0.485, 0.456, 0.406};
  spec.preprocess.std = {0.229, 0.224, 0.225};
  (void)qopt::LoadDataset(spec);
  return 0;
}
