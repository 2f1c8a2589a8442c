// fedsilo-bench-sqlcipher: the run store benchmark's workload (store_workload.h)
// through Debian's SQLCipher, without a key and with one (a raw 256-bit key,
// so no passphrase derivation), in the job store's schema and transactions
// (WAL, synchronous=FULL, one transaction per round). Built apart from
// fedsilo on purpose: SQLCipher exports the same sqlite3_* names as the
// system SQLite that fedsilo's other libraries load; see
// docs/encryption-at-rest.md, "The run store".
//
//   fedsilo-bench-sqlcipher [--rounds 1000] [--silos 10] [--json]
#include <sqlite3.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "store_workload.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Check(int rc, sqlite3* db, const char* what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    std::fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
    std::exit(1);
  }
}

void Exec(sqlite3* db, const char* sql) { Check(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), db, sql); }

sqlite3* OpenStore(const std::string& path, bool keyed) {
  sqlite3* db = nullptr;
  Check(sqlite3_open(path.c_str(), &db), db, "open");
  // A fixed raw key: what matters here is the cipher's cost, not the key.
  if (keyed) {
    Exec(db,
         "PRAGMA key = \"x'2DD29CA851E7B56E4697B0E1F08507293D761A05CE4D1B628663F411A8086D99'\"");
  }
  Exec(db, "PRAGMA journal_mode=WAL");
  Exec(db, "PRAGMA synchronous=FULL");
  return db;
}

struct Figures {
  double write_s = 0, read_s = 0;
  uintmax_t bytes = 0;
  long rows = 0;
};

Figures Measure(const std::string& dir, bool keyed, int rounds, int silos) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/fedsilo.db";
  Figures f;
  sqlite3* db = OpenStore(path, keyed);
  Exec(db,
       "CREATE TABLE rounds (job_id TEXT NOT NULL, round INTEGER NOT NULL, finished REAL NOT "
       "NULL, seconds REAL NOT NULL, silos_sampled INTEGER NOT NULL, silos_succeeded INTEGER NOT "
       "NULL, failures TEXT NOT NULL, PRIMARY KEY (job_id, round));"
       "CREATE TABLE metrics (job_id TEXT NOT NULL, round INTEGER NOT NULL, source TEXT NOT "
       "NULL, name TEXT NOT NULL, value REAL NOT NULL, time REAL NOT NULL);"
       "CREATE INDEX metrics_by_job ON metrics (job_id, round);"
       "CREATE TABLE job_silos (job_id TEXT NOT NULL, silo TEXT NOT NULL, state TEXT NOT NULL, "
       "last_seen REAL NOT NULL DEFAULT 0, rounds INTEGER NOT NULL DEFAULT 0, examples INTEGER "
       "NOT NULL DEFAULT 0, epsilon REAL NOT NULL DEFAULT -1, PRIMARY KEY (job_id, silo));"
       "CREATE TABLE jobs (id TEXT PRIMARY KEY, rounds_completed INTEGER NOT NULL);"
       "INSERT INTO jobs VALUES ('job-1', 0);");
  const Clock::time_point start = Clock::now();
  for (int r = 1; r <= rounds; ++r) {
    Exec(db, "BEGIN IMMEDIATE");
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, "INSERT INTO rounds VALUES ('job-1', ?, ?, 0.5, ?, ?, '[]')", -1, &s,
                       nullptr);
    sqlite3_bind_int(s, 1, r);
    sqlite3_bind_double(s, 2, 1.7e9 + r);
    sqlite3_bind_int(s, 3, silos);
    sqlite3_bind_int(s, 4, silos);
    Check(sqlite3_step(s), db, "round");
    sqlite3_finalize(s);
    for (const fedsilo::bench::StoreMetric& m : fedsilo::bench::RoundMetrics(r, silos)) {
      sqlite3_prepare_v2(db, "INSERT INTO metrics VALUES ('job-1', ?, ?, ?, ?, ?)", -1, &s,
                         nullptr);
      sqlite3_bind_int(s, 1, r);
      sqlite3_bind_text(s, 2, m.source.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(s, 3, m.name.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_double(s, 4, m.value);
      sqlite3_bind_double(s, 5, 1.7e9 + r);
      Check(sqlite3_step(s), db, "metric");
      sqlite3_finalize(s);
    }
    // The silos' part (SQLite 3.15 has no upsert: insert, then update).
    for (int i = 1; i <= silos; ++i) {
      const std::string silo = "silo-" + std::to_string(i);
      sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO job_silos (job_id, silo, state) VALUES "
                             "('job-1', ?, 'ok')", -1, &s, nullptr);
      sqlite3_bind_text(s, 1, silo.c_str(), -1, SQLITE_TRANSIENT);
      Check(sqlite3_step(s), db, "silo");
      sqlite3_finalize(s);
      sqlite3_prepare_v2(db, "UPDATE job_silos SET state = 'ok', last_seen = ?, rounds = rounds "
                             "+ 1, examples = ?, epsilon = ? WHERE job_id = 'job-1' AND silo = ?",
                         -1, &s, nullptr);
      sqlite3_bind_double(s, 1, 1.7e9 + r);
      sqlite3_bind_int(s, 2, 1000 + 37 * i);
      sqlite3_bind_double(s, 3, 0.01 * r);
      sqlite3_bind_text(s, 4, silo.c_str(), -1, SQLITE_TRANSIENT);
      Check(sqlite3_step(s), db, "silo");
      sqlite3_finalize(s);
    }
    sqlite3_prepare_v2(db, "UPDATE jobs SET rounds_completed = ? WHERE id = 'job-1'", -1, &s,
                       nullptr);
    sqlite3_bind_int(s, 1, r);
    Check(sqlite3_step(s), db, "job");
    sqlite3_finalize(s);
    Exec(db, "COMMIT");
  }
  f.write_s = Since(start);
  sqlite3_close(db);
  db = OpenStore(path, keyed);
  const Clock::time_point read = Clock::now();
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT round, source, name, value, time FROM metrics WHERE job_id = 'job-1' "
                     "ORDER BY round, rowid",
                     -1, &s, nullptr);
  double sum = 0;
  while (sqlite3_step(s) == SQLITE_ROW) {
    sum += sqlite3_column_double(s, 3);
    std::string name(reinterpret_cast<const char*>(sqlite3_column_text(s, 2)));
    ++f.rows;
  }
  sqlite3_finalize(s);
  f.read_s = Since(read);
  sqlite3_close(db);
  f.bytes = std::filesystem::file_size(path);
  if (sum < 0) std::printf("%g\n", sum);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 1000, silos = 10;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (a == "--silos" && i + 1 < argc) {
      silos = std::atoi(argv[++i]);
    } else if (a == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "usage: fedsilo-bench-sqlcipher [--rounds N] [--silos N] [--json]\n");
      return 2;
    }
  }
  if (rounds < 1 || silos < 1) {
    std::fprintf(stderr, "--rounds and --silos must be at least 1\n");
    return 2;
  }
  const std::string base = std::filesystem::temp_directory_path().string() +
                           "/fedsilo-sqlcipher-bench-" + std::to_string(::getpid());
  const Figures plain = Measure(base + "/plain", false, rounds, silos);
  const Figures keyed = Measure(base + "/keyed", true, rounds, silos);
  // The keyed file must not be SQLite's plain format, or the key was ignored.
  std::FILE* in = std::fopen((base + "/keyed/fedsilo.db").c_str(), "rb");
  char header[16] = {};
  const size_t got = in != nullptr ? std::fread(header, 1, sizeof header, in) : 0;
  if (in != nullptr) std::fclose(in);
  std::filesystem::remove_all(base);
  if (got != sizeof header || std::memcmp(header, "SQLite format 3", 15) == 0) {
    std::fprintf(stderr, "the keyed store was written in the clear: SQLCipher is not in use\n");
    return 1;
  }
  std::printf("SQLCipher %s, %d rounds x %d silos (%ld metric rows), WAL + synchronous=FULL\n",
              sqlite3_libversion(), rounds, silos, plain.rows);
  std::printf("  %-10s %10s %10s %10s %10s\n", "", "write s", "ms/round", "read s", "MB");
  auto line = [&](const char* name, const Figures& f) {
    std::printf("  %-10s %10.3f %10.3f %10.3f %10.2f\n", name, f.write_s, 1000 * f.write_s / rounds,
                f.read_s, f.bytes / 1e6);
  };
  line("no key", plain);
  line("keyed", keyed);
  std::printf("  keyed/no key: write %.2fx, read %.2fx, size %.2fx\n", keyed.write_s / plain.write_s,
              keyed.read_s / plain.read_s, static_cast<double>(keyed.bytes) / plain.bytes);
  if (json) {
    std::printf(
        "{\"benchmark\":\"store-sqlcipher\",\"rounds\":%d,\"silos\":%d,\"plain\":{\"write_s\":%g,"
        "\"read_s\":%g,\"bytes\":%ju},\"keyed\":{\"write_s\":%g,\"read_s\":%g,\"bytes\":%ju}}\n",
        rounds, silos, plain.write_s, plain.read_s, plain.bytes, keyed.write_s, keyed.read_s,
        keyed.bytes);
  }
  return 0;
}
