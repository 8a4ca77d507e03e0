#include "sha256.h"

#include <openssl/evp.h>

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qopt {

struct Sha256::Ctx {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
}

Sha256::~Sha256() = default;

void Sha256::Update(absl::string_view bytes) {
  EVP_DigestUpdate(ctx_->md, bytes.data(), bytes.size());
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx_->md, digest, &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

PipelinedSha256::PipelinedSha256() : thread_([this] { HashQueued(); }) {}

PipelinedSha256::~PipelinedSha256() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void PipelinedSha256::Update(std::string bytes) {
  constexpr size_t kMaxQueued = 4 << 20;
  if (bytes.empty()) return;
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return queued_bytes_ <= kMaxQueued; });
  queued_bytes_ += bytes.size();
  queue_.push_back(std::move(bytes));
  changed_.notify_all();
}

std::string PipelinedSha256::HexDigest() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return queue_.empty() && !hashing_; });
  return hash_.HexDigest();
}

void PipelinedSha256::HashQueued() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    std::string bytes = std::move(queue_.front());
    queue_.pop_front();
    hashing_ = true;
    lock.unlock();
    hash_.Update(bytes);
    const size_t hashed = bytes.size();
    bytes = std::string();  // freed outside the lock
    lock.lock();
    hashing_ = false;
    queued_bytes_ -= hashed;
    changed_.notify_all();
  }
}

absl::StatusOr<FileDigest> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  Sha256 hash;
  FileDigest result;
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    hash.Update(absl::string_view(buffer.data(), static_cast<size_t>(n)));
    result.size += n;
  }
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("error reading ", path));
  result.sha256 = hash.HexDigest();
  return result;
}

bool IsSha256Hex(absl::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace qopt
