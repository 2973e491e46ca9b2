// Reading the golden files of tests/golden (written by the scripts of tests/reference and training/parity.py):
// meta.json records and raw little-endian float32 arrays. A file that cannot be opened fails the test (REQUIRE).
#pragma once
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

namespace dsinfer::test {

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream f(p);
  INFO(p);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

inline std::vector<float> read_f32(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary | std::ios::ate);
  INFO(p);
  REQUIRE(f.good());
  const auto n = size_t(f.tellg());
  std::vector<float> v(n / 4);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n));
  return v;
}

}  // namespace dsinfer::test
