// The server's one SQLite database, shared by the job store and the catalog: a single
// connection and the mutex that serialises every statement on it. Opening it applies the
// schema migrations that have not run yet (PRAGMA user_version counts them).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "store/sqlite.h"

namespace qopt::server {

class StoreDb {
 public:
  static absl::StatusOr<std::shared_ptr<StoreDb>> Open(const std::string& path);

  Database* db() { return db_.get(); }
  std::mutex& mu() { return mu_; }
  /// Runs `body` in a write transaction, rolled back when it fails. Caller holds mu().
  absl::Status Transaction(const std::function<absl::Status()>& body);

 private:
  explicit StoreDb(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Status Migrate();
  std::unique_ptr<Database> db_;
  std::mutex mu_;
};

/// A fresh random id: prefix followed by 16 hex digits. Not secret (a fast generator).
std::string RandomId(const char* prefix);
/// A secret credential: 256 bits from OpenSSL's CSPRNG, as 64 hex digits.
absl::StatusOr<std::string> RandomSecret();
int64_t NowUnixMs();

}  // namespace qopt::server
