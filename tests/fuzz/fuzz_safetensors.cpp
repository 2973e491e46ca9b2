// safetensors headers and model.safetensors.index.json. The first byte picks what the rest is:
// even: a whole .safetensors file; odd: an index.json naming shards, next to a valid shard "a.safetensors".
#include <cstring>

#include "checkpoint/safetensors_reader.hpp"
#include "dsinfer/error.hpp"
#include "fuzz_input.hpp"

namespace {

// A valid shard with a 2x2 F32 tensor "w" and a 3-element BF16 tensor "b" (the index's shard).
std::string valid_shard() {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}})";
  std::string f(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return f + header + std::string(22, '\x01');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  if (size < 1) return 0;
  const std::string_view rest = fuzz::as_text(data + 1, size - 1);
  try {
    if (data[0] % 2 == 0) {
      const std::string path = fuzz::write_file("model.safetensors", rest);
      const auto f = SafetensorsFile::open(path);
      for (const auto& [name, t] : f->tensors()) {
        // Every byte a tensor claims must be readable (ASan sees a read past the mapping) and its shape must agree.
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < t.nbytes; i += 61) sink = sink + t.data[i];
        if (t.nbytes && uint64_t(t.numel()) * dtype_size(t.dtype) != t.nbytes) __builtin_trap();
      }
    } else {
      static const bool shard_written = [] { fuzz::write_file("a.safetensors", valid_shard()); return true; }();
      (void)shard_written;
      std::filesystem::remove(fuzz::scratch_dir() / "model.safetensors");
      fuzz::write_file("model.safetensors.index.json", rest);
      const auto c = Checkpoint::open(fuzz::scratch_dir().string());
      for (const auto& [name, t] : c->tensors())
        if (!t || !t->data) __builtin_trap();
      std::filesystem::remove(fuzz::scratch_dir() / "model.safetensors.index.json");
    }
  } catch (const Error&) {
    std::filesystem::remove(fuzz::scratch_dir() / "model.safetensors.index.json");
  }
  return 0;
}
