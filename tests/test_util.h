// Helpers shared by the tests that run the fedsilo binary.
#ifndef FEDSILO_TESTS_TEST_UTIL_H_
#define FEDSILO_TESTS_TEST_UTIL_H_

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

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

}  // namespace fedsilo::testing_util

#endif  // FEDSILO_TESTS_TEST_UTIL_H_
