// A thin RAII layer over SQLite: one connection, prepared statements with bound
// parameters only (no SQL is ever built from values), errors as absl::Status.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace qopt::server {

class Statement;

class Database {
 public:
  /// Opens (creating) `path` in WAL mode with foreign keys on.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& path);
  ~Database();

  /// Runs SQL without parameters (schema, pragmas, BEGIN / COMMIT).
  absl::Status Exec(const std::string& sql);
  absl::StatusOr<Statement> Prepare(const std::string& sql);
  int64_t LastInsertRowId() const;
  int Changes() const;
  sqlite3* handle() const { return db_; }

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

class Statement {
 public:
  Statement(Statement&& o) noexcept : stmt_(o.stmt_), db_(o.db_) { o.stmt_ = nullptr; }
  ~Statement();

  Statement& Bind(int index, int64_t v);
  Statement& Bind(int index, double v);
  Statement& Bind(int index, const std::string& v);
  Statement& BindBlob(int index, const std::string& bytes);
  /// Steps once: true while a row is available, false when done.
  absl::StatusOr<bool> Step();
  /// Steps to completion (INSERT / UPDATE / DELETE).
  absl::Status Run();

  int64_t Int(int col) const;
  double Double(int col) const;
  std::string Text(int col) const;
  std::string Blob(int col) const;
  bool IsNull(int col) const;

 private:
  friend class Database;
  Statement(sqlite3_stmt* stmt, sqlite3* db) : stmt_(stmt), db_(db) {}
  sqlite3_stmt* stmt_;
  sqlite3* db_;
};

}  // namespace qopt::server
