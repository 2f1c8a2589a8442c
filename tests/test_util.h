// Helpers shared by the tests that run the fedsilo binary: the one way they
// run it, read what it wrote, and wait for something to happen.
#ifndef FEDSILO_TESTS_TEST_UTIL_H_
#define FEDSILO_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fedsilo::testing_util {

// The fedsilo binary under test: $FEDSILO_BINARY, else the build's.
inline std::string FedsiloBinary() {
  const char* b = std::getenv("FEDSILO_BINARY");
  return b != nullptr ? b : FEDSILO_TEST_BINARY;
}

// A whole file's bytes; empty if it cannot be read.
inline std::string ReadAll(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path, std::ios::binary).rdbuf();
  return s.str();
}

// A CSV file's rows, each split at its commas (no quoting: for the files
// fedsilo writes and the tests' own).
inline std::vector<std::vector<std::string>> ReadCsv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

// What a command printed, and how it ended.
struct Output {
  int status = -1;  // the exit status; -1 when it did not exit (killed by a signal)
  std::string out;  // standard output
  std::string err;  // standard error
};

// Runs `fedsilo <args>` to completion, with `env` ("NAME=value ...") in
// front, no standard input, and its output captured.
inline Output Fedsilo(const std::string& args, const std::string& env = "") {
  // Unique per process and call: CTest runs tests in parallel processes.
  static std::atomic<int> counter{0};
  const std::string base = ::testing::TempDir() + "/fedsilo." + std::to_string(::getpid()) + "." +
                           std::to_string(++counter);
  const std::string cmd = env + " " + FedsiloBinary() + " " + args + " >" + base + ".out 2>" +
                          base + ".err </dev/null";
  const int raw = std::system(cmd.c_str());
  Output o;
  o.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  o.out = ReadAll(base + ".out");
  o.err = ReadAll(base + ".err");
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  return o;
}

// The last line of `text` parsed as JSON (a command's --json summary); a
// discarded value when it is not JSON.
inline nlohmann::json LastJson(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return nlohmann::json::parse(text.substr(text.rfind('\n') + 1), nullptr, false);
}

// Generous by design: a sanitizer build on a loaded two-core machine takes
// seconds to start a process that loads libtorch. A wait that ends early
// costs nothing; only one that would have failed lasts this long.
inline constexpr std::chrono::seconds kEventCeiling{180};

// Polls `done` until it is true (returns true) or `limit` passes (false).
inline bool WaitUntil(const std::function<bool()>& done,
                      std::chrono::seconds limit = kEventCeiling,
                      std::chrono::milliseconds poll = std::chrono::milliseconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(poll);
  }
}

// How many times `text` occurs in the file at `path` (0 when it cannot be read).
inline int CountInFile(const std::string& path, const std::string& text) {
  const std::string all = ReadAll(path);
  int n = 0;
  for (size_t at = all.find(text); at != std::string::npos; at = all.find(text, at + 1)) ++n;
  return n;
}

// Waits until the file at `path` holds `text` more than `already` times.
inline bool WaitForText(const std::string& path, const std::string& text, int already = 0,
                        std::chrono::seconds limit = kEventCeiling) {
  return WaitUntil([&] { return CountInFile(path, text) > already; }, limit);
}

}  // namespace fedsilo::testing_util

#endif  // FEDSILO_TESTS_TEST_UTIL_H_
