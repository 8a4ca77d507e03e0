// Helpers shared by the harnesses: parsers that take a path get the fuzz input as a
// file in a folder owned by this process (libFuzzer's -jobs runs several processes).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace qopt::fuzz {

/// A folder under the system temp folder, made once per process.
inline const std::filesystem::path& ScratchDir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("qopt-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

/// Writes the input to `name` inside ScratchDir() and returns its path.
inline std::string WriteInput(const uint8_t* data, size_t size, const std::string& name) {
  const std::filesystem::path path = ScratchDir() / name;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path.string();
}

}  // namespace qopt::fuzz
