// Memory-mapped safetensors shards and a Hugging Face checkpoint directory over them.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/dtype.hpp"

namespace dsinfer {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file (zero-copy); valid while the file is open
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the shard holding it
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

// One .safetensors file, mapped read-only. The header is validated completely on open: JSON syntax, known
// dtypes, shape x dtype size == byte range, ranges inside the file, no two tensors overlapping.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);  // throws Error(Io|Format|Unsupported)
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::unique_ptr<uint64_t[]>> aligned_copies_;  // tensors whose offset in the file is misaligned
};

// A checkpoint directory: model.safetensors.index.json + shards, or a single model.safetensors.
class Checkpoint {
 public:
  // Opens every shard listed (each once). Throws Error naming the directory/file on a missing index, missing shard,
  // a tensor listed in the index but absent from its shard, or the same tensor in two shards.
  static std::unique_ptr<Checkpoint> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  const std::map<std::string, const TensorInfo*>& tensors() const { return index_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

}  // namespace dsinfer
