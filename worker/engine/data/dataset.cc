#include "data/dataset.h"

#include <zip.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/image_decode.h"
#include "data/tensor_file.h"
#include "status.h"

namespace qopt {
namespace internal_dataset {

namespace fs = std::filesystem;

struct Raw {
  at::Tensor inputs;
  std::optional<at::Tensor> labels;
  std::vector<std::string> classes;
};

absl::StatusOr<std::string> DetectFormat(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return std::string("image_folder");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("data file not found: ", path));
  unsigned char head[6] = {0};
  in.read(reinterpret_cast<char*>(head), 6);
  const auto got = in.gcount();
  if (got >= 2 && head[0] == 0x1f && head[1] == 0x8b) return std::string("idx");  // gzipped
  if (got >= 4 && head[0] == 0 && head[1] == 0 && head[2] >= 0x08 && head[2] <= 0x0E)
    return std::string("idx");
  if (got == 6 && head[0] == 0x93 && std::string(reinterpret_cast<char*>(head + 1), 5) == "NUMPY")
    return std::string("npy");
  if (got >= 2 && head[0] == 'P' && head[1] == 'K') {
    // Both .npz and torch.save files are zip archives; torch's hold a data.pkl.
    int err = 0;
    zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
    if (!z) return absl::InvalidArgumentError(absl::StrCat(path, ": corrupt zip archive"));
    bool pickle = false;
    for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0); ++i) {
      const std::string name = zip_get_name(z, i, 0);
      pickle = pickle || (name.size() >= 8 && name.substr(name.size() - 8) == "data.pkl");
    }
    zip_close(z);
    return std::string(pickle ? "torch" : "npz");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": unknown data format (expected IDX, .npy, .npz, a torch.save file or an image folder)"));
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadNpz(const std::string& path) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (!z) return absl::InvalidArgumentError(absl::StrCat(path, ": corrupt .npz archive"));
  std::map<std::string, at::Tensor> arrays;
  absl::Status status;
  for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0) && status.ok(); ++i) {
    zip_stat_t st;
    if (zip_stat_index(z, i, 0, &st) != 0) continue;
    std::string name = st.name;
    if (name.size() < 4 || name.substr(name.size() - 4) != ".npy") continue;
    // The entry's size is the archive's claim: memory grows only with bytes actually read.
    std::vector<char> bytes;
    zip_file_t* f = zip_fopen_index(z, i, 0);
    zip_int64_t n = f ? 0 : -1;
    char chunk[1 << 16];
    while (f && (n = zip_fread(f, chunk, sizeof(chunk))) > 0 && bytes.size() + n <= st.size) {
      bytes.insert(bytes.end(), chunk, chunk + n);
    }
    if (f) zip_fclose(f);
    if (n != 0 || bytes.size() != st.size) {
      status = absl::InvalidArgumentError(absl::StrCat(path, ": cannot read ", name, " (corrupt archive)"));
      break;
    }
    auto t = ParseNpy(bytes, absl::StrCat(path, ":", name));
    if (!t.ok()) status = t.status();
    else arrays[name.substr(0, name.size() - 4)] = *t;
  }
  zip_close(z);
  if (!status.ok()) return status;
  return arrays;
}

template <typename Map>
std::optional<at::Tensor> Pick(const Map& m, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (auto it = m.find(n); it != m.end()) return it->second;
  }
  return std::nullopt;
}

absl::StatusOr<Raw> ReadNpzDataset(const std::string& path) {
  ASSIGN_OR_RETURN(auto arrays, ReadNpz(path));
  Raw raw;
  auto inputs = Pick(arrays, {"inputs", "images", "x", "data"});
  if (!inputs && arrays.size() == 1) inputs = arrays.begin()->second;
  if (!inputs) {
    std::vector<std::string> names;
    for (const auto& [n, _] : arrays) names.push_back(n);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": no 'inputs' / 'images' / 'x' array (found: ", absl::StrJoin(names, ", "), ")"));
  }
  raw.inputs = *inputs;
  raw.labels = Pick(arrays, {"labels", "y", "targets"});
  return raw;
}

absl::StatusOr<Raw> ReadTorchDataset(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<char> bytes, ReadFileBytes(path));
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(bytes);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a torch.save file: ", FirstLine(e.what_without_backtrace())));
  }
  Raw raw;
  if (v.isTensor()) {
    raw.inputs = v.toTensor();
    return raw;
  }
  if (v.isGenericDict()) {
    std::map<std::string, at::Tensor> m;
    for (const auto& kv : v.toGenericDict()) {
      if (kv.key().isString() && kv.value().isTensor()) m[kv.key().toStringRef()] = kv.value().toTensor();
    }
    auto inputs = Pick(m, {"inputs", "images", "x", "data"});
    if (!inputs) return absl::InvalidArgumentError(absl::StrCat(path, ": dict has no 'inputs' tensor"));
    raw.inputs = *inputs;
    raw.labels = Pick(m, {"labels", "y", "targets"});
    return raw;
  }
  std::vector<at::Tensor> parts;
  if (v.isTuple() || v.isList() || v.isTensorList()) {
    const auto elems = v.isTuple() ? v.toTupleRef().elements().vec() : v.toListRef().vec();
    for (const auto& e : elems) {
      if (!e.isTensor()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": list holds a ", e.tagKind(),
                                                       ", expected tensors"));
      }
      parts.push_back(e.toTensor());
    }
  }
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a tensor, a list of tensors, (inputs, labels) or a dict; found ",
                     v.tagKind()));
  }
  // (inputs, labels): a pair whose second member is one integer label per sample.
  if (parts.size() == 2 && parts[1].dim() == 1 && !at::isFloatingType(parts[1].scalar_type()) &&
      parts[0].dim() >= 1 && parts[0].size(0) == parts[1].size(0) && parts[0].dim() > 1) {
    raw.inputs = parts[0];
    raw.labels = parts[1];
    return raw;
  }
  try {
    raw.inputs = at::stack(parts);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensors in the list differ in shape"));
  }
  return raw;
}

absl::StatusOr<Raw> ReadImageFolder(const std::string& root, const Preprocess& pre) {
  std::vector<std::string> classes;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot list ", root, ": ", ec.message()));
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(root, ": no class sub-folders"));
  }
  std::vector<at::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(fs::path(root) / classes[c])) {
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
        files.push_back(entry.path().string());
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      ASSIGN_OR_RETURN(const std::vector<char> bytes, ReadFileBytes(file));
      absl::StatusOr<DecodedImage> decoded = DecodeImage(bytes, pre.channels == 1 ? 1 : 3);
      if (!decoded.ok()) return Annotate(decoded.status(), file);
      const int h = decoded->height, w = decoded->width;
      at::Tensor img = at::from_blob(decoded->pixels.data(), {h, w, decoded->channels}, at::kByte)
                           .permute({2, 0, 1})
                           .to(at::kFloat);
      img = img.unsqueeze(0);
      if (pre.resize > 0) {
        const double s = static_cast<double>(pre.resize) / std::min(h, w);
        const int64_t nh = std::max<int64_t>(1, std::lround(h * s)), nw = std::max<int64_t>(1, std::lround(w * s));
        img = at::upsample_bilinear2d(img, {nh, nw}, /*align_corners=*/false);
      }
      if (pre.center_crop > 0) {
        const int64_t ch = img.size(2), cw = img.size(3), k = pre.center_crop;
        if (ch < k || cw < k) {
          return absl::InvalidArgumentError(absl::StrCat(file, ": ", ch, "x", cw,
                                                         " is smaller than the crop ", k));
        }
        img = img.slice(2, (ch - k) / 2, (ch - k) / 2 + k).slice(3, (cw - k) / 2, (cw - k) / 2 + k);
      }
      if (!images.empty() && img.sizes().slice(1) != images.front().sizes().slice(1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            file, ": image size differs from the others; set preprocess resize / center_crop"));
      }
      images.push_back(img);
      labels.push_back(static_cast<int64_t>(c));
    }
  }
  if (images.empty()) return absl::InvalidArgumentError(absl::StrCat(root, ": no PNG or JPEG images"));
  Raw raw;
  raw.inputs = at::cat(images);  // float pixels in [0, 255]
  raw.labels = at::tensor(labels, at::kLong);
  raw.classes = classes;
  return raw;
}

absl::StatusOr<at::Tensor> ReadLabels(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string format, DetectFormat(path));
  if (format == "idx") return ReadIdx(path);
  if (format == "npy") {
    ASSIGN_OR_RETURN(std::vector<char> bytes, ReadFileBytes(path));
    return ParseNpy(bytes, path);
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": labels must be an IDX or .npy file"));
}

// Scale 8-bit data, give images a channel axis, convert channels, normalize.
absl::StatusOr<at::Tensor> ApplyPreprocess(at::Tensor x, bool pixels, const Preprocess& pre,
                                           const std::string& path) {
  const bool integer = !at::isFloatingType(x.scalar_type());
  x = x.to(at::kFloat);
  if (integer || pixels) x = x * pre.scale;
  if (x.dim() == 3 && (integer || pixels)) x = x.unsqueeze(1);  // (N, H, W) grey images
  if (pre.channels > 0 && x.dim() == 4 && x.size(1) != pre.channels) {
    if (x.size(1) == 1 && pre.channels == 3) {
      x = x.expand({-1, 3, -1, -1}).contiguous();
    } else if (x.size(1) == 3 && pre.channels == 1) {
      // ITU-R BT.601 luma.
      x = (x.select(1, 0) * 0.299 + x.select(1, 1) * 0.587 + x.select(1, 2) * 0.114).unsqueeze(1);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ": cannot convert ", x.size(1),
                                                     " channels to ", pre.channels));
    }
  }
  auto per_channel = [&](const std::vector<double>& v, const char* what) -> absl::StatusOr<at::Tensor> {
    if (v.size() == 1 || x.dim() < 2) return at::tensor(v, at::kDouble).to(at::kFloat).reshape({-1});
    if (static_cast<int64_t>(v.size()) != x.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": preprocess ", what, " has ", v.size(),
                                                     " values for ", x.size(1), " channels"));
    }
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = x.size(1);
    return at::tensor(v, at::kDouble).to(at::kFloat).reshape(shape);
  };
  if (!pre.mean.empty()) {
    ASSIGN_OR_RETURN(at::Tensor m, per_channel(pre.mean, "mean"));
    x = x - m;
  }
  if (!pre.std.empty()) {
    ASSIGN_OR_RETURN(at::Tensor s, per_channel(pre.std, "std"));
    if ((s <= 0).any().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": preprocess std must be > 0"));
    }
    x = x / s;
  }
  return x.contiguous();
}

}  // namespace internal_dataset

absl::StatusOr<Dataset> LoadDataset(const DatasetSpec& spec) {
  using namespace internal_dataset;
  if (spec.path.empty()) return absl::InvalidArgumentError("data set has no path");
  std::string format = spec.format.empty() ? "auto" : spec.format;
  if (format == "auto") {
    ASSIGN_OR_RETURN(format, DetectFormat(spec.path));
  }
  Raw raw;
  bool pixels = false;
  if (format == "idx") {
    ASSIGN_OR_RETURN(raw.inputs, ReadIdx(spec.path));
  } else if (format == "npy") {
    ASSIGN_OR_RETURN(std::vector<char> bytes, ReadFileBytes(spec.path));
    ASSIGN_OR_RETURN(raw.inputs, ParseNpy(bytes, spec.path));
  } else if (format == "npz") {
    ASSIGN_OR_RETURN(raw, ReadNpzDataset(spec.path));
  } else if (format == "torch") {
    ASSIGN_OR_RETURN(raw, ReadTorchDataset(spec.path));
  } else if (format == "image_folder") {
    ASSIGN_OR_RETURN(raw, ReadImageFolder(spec.path, spec.preprocess));
    pixels = true;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown data format '", format, "': use auto, idx, npy, npz, torch or image_folder"));
  }
  if (!spec.labels_path.empty()) {
    ASSIGN_OR_RETURN(at::Tensor labels, ReadLabels(spec.labels_path));
    raw.labels = labels;
  }
  if (raw.inputs.dim() < 1 || raw.inputs.size(0) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(spec.path, ": holds no samples"));
  }
  Dataset d;
  ASSIGN_OR_RETURN(d.inputs, ApplyPreprocess(raw.inputs, pixels, spec.preprocess, spec.path));
  d.classes = std::move(raw.classes);
  if (raw.labels) {
    const at::Tensor& l = *raw.labels;
    if (l.dim() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          spec.labels_path.empty() ? spec.path : spec.labels_path,
          ": labels must have one entry per sample along their first axis"));
    }
    if (l.size(0) != d.inputs.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat("labels and inputs differ in length: ",
                                                     l.size(0), " labels for ", d.inputs.size(0),
                                                     " samples"));
    }
    // Classes stay integers (one per sample, or per pixel); anything else is a target value.
    d.labels = at::isFloatingType(l.scalar_type()) ? l.to(at::kFloat).contiguous() : l.to(at::kLong);
  }
  const int64_t n = d.inputs.size(0);
  if (spec.shuffle) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
    const at::Tensor order = at::randperm(n, gen, at::kLong);
    d.inputs = d.inputs.index_select(0, order);
    if (d.labels) d.labels = d.labels->index_select(0, order);
  }
  if (spec.max_samples > 0 && spec.max_samples < n) {
    d.inputs = d.inputs.slice(0, 0, spec.max_samples).contiguous();
    if (d.labels) d.labels = d.labels->slice(0, 0, spec.max_samples).contiguous();
  }
  return d;
}

std::vector<Batch> MakeBatches(const Dataset& data, int64_t batch_size) {
  std::vector<Batch> out;
  const int64_t n = data.size();
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t end = std::min(n, start + batch_size);
    Batch b{data.inputs.slice(0, start, end), std::nullopt};
    if (data.labels) b.labels = data.labels->slice(0, start, end);
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace qopt
