// TorchScript import (archive admission, loading, graph admission, freezing, conversion
// to qopt's IR). Input that starts with "PK" is written as the model file unchanged.
// Any other input is a text form of an archive, so that mutations reach the pickles and
// the TorchScript code instead of stopping at the zip's CRCs: records
//   "@@ <entry name>\n<bytes>" ... (each record's bytes end where the next "\n@@ " begins)
// are stored, in order, into a zip the harness writes (make_corpus.py writes the seeds).
#include <zip.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_input.h"
#include "ir/import.h"

namespace {

std::vector<std::pair<std::string, std::string>> SplitRecords(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> records;
  constexpr std::string_view kMark = "@@ ";
  if (text.substr(0, kMark.size()) != kMark) return records;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t name_end = text.find('\n', pos);
    if (name_end == std::string_view::npos) break;
    const std::string name(text.substr(pos + kMark.size(), name_end - pos - kMark.size()));
    size_t next = text.find("\n@@ ", name_end);
    const size_t body_end = next == std::string_view::npos ? text.size() : next;
    records.emplace_back(name, std::string(text.substr(name_end + 1, body_end - name_end - 1)));
    pos = next == std::string_view::npos ? text.size() : next + 1;
  }
  return records;
}

bool WriteZip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& records) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (z == nullptr) return false;
  for (const auto& [name, body] : records) {
    zip_source_t* src = zip_source_buffer(z, body.data(), body.size(), 0);
    const zip_int64_t index = src ? zip_file_add(z, name.c_str(), src, ZIP_FL_OVERWRITE) : -1;
    if (index < 0) {
      if (src) zip_source_free(src);
      zip_discard(z);
      return false;
    }
    zip_set_file_compression(z, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
  }
  return zip_close(z) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string path;
  if (text.substr(0, 2) == "PK") {
    path = qopt::fuzz::WriteInput(data, size, "model.pt");
  } else {
    const auto records = SplitRecords(text);
    if (records.empty()) return 0;
    path = (qopt::fuzz::ScratchDir() / "model.pt").string();
    if (!WriteZip(path, records)) return 0;
  }
  (void)qopt::ImportTorchScript(path);
  return 0;
}
