#include "checkpoint/safetensors_reader.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "dsinfer/error.hpp"
#include "util/json_input.hpp"

namespace dsinfer {

namespace {

using json = nlohmann::json;

[[noreturn]] void format_error(const std::string& path, const std::string& msg) {
  throw Error(ErrorCode::Format, fmt::format("{}: {}", path, msg));
}

// The header length is a little-endian u64; a header is JSON and limited to 100 MB as the format specifies.
constexpr uint64_t kMaxHeader = 100u << 20;

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorCode::Io, fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(ErrorCode::Io, fmt::format("cannot stat {}: {}", path, std::strerror(err)));
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    format_error(path, fmt::format("truncated: {} bytes, shorter than the 8-byte header length", size));
  }
  // Map the whole file once: sizes are checked against fstat below before any tensor byte is touched, so a
  // truncated file is an error here rather than a SIGBUS later.
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw Error(ErrorCode::Io, fmt::format("cannot map {}: {}", path, std::strerror(map_err)));
  f->map_ = map;
  f->map_size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeader || 8 + header_len > size)
    format_error(path, fmt::format("truncated or corrupt: the header claims {} bytes but the file has {}", header_len, size));
  json header;
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_len);
  try {
    check_json_depth(header_text);
    // nlohmann keeps the last of two equal keys; a tensor named twice must be refused, not half-read.
    std::string duplicate;
    std::set<std::string> names;
    const json::parser_callback_t note_names = [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth == 1 && event == json::parse_event_t::key && !names.insert(parsed.get<std::string>()).second &&
          duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    };
    header = json::parse(header_text, note_names);
    if (!duplicate.empty()) format_error(path, fmt::format("tensor \"{}\" appears twice in the header", excerpt(duplicate)));
  } catch (const JsonInputError& e) {
    format_error(path, fmt::format("header is not valid JSON: {}", e.what()));
  } catch (const json::exception& e) {
    format_error(path, fmt::format("header is not valid JSON: {}", json_error_reason(e)));
  }
  if (!header.is_object()) format_error(path, "header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) format_error(path, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items())
        f->metadata_[k] = v.is_string() ? v.get<std::string>() : json_excerpt(v);
      continue;
    }
    const std::string& tensor = name;  // a structured binding cannot be captured before C++20 (clang 14)
    auto bad = [&](const std::string& what) { format_error(path, fmt::format("tensor \"{}\": {}", excerpt(tensor), what)); };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      bad("entry must have dtype, shape and data_offsets");
    TensorInfo t;
    t.name = name;
    const json& dt = entry.at("dtype");
    if (!dt.is_string()) bad("dtype is not a string");
    if (!dtype_from_name(dt.get<std::string>(), &t.dtype))
      throw Error(ErrorCode::Unsupported, fmt::format("{}: tensor \"{}\" has dtype {}, which dsinfer does not read "
                                                      "(F32, BF16, F16, F8_E4M3, I32, I64)",
                                                      path, name, dt.get<std::string>()));
    const json& sh = entry.at("shape");
    if (!sh.is_array()) bad("shape is not a list");
    // The product of the non-zero dims is bounded (2^62), so TensorInfo::numel() cannot overflow in any order, and
    // a tensor with elements has no more elements than the data section has bytes, so byte sizes cannot either.
    uint64_t nonzero_product = 1;
    bool empty = false;
    for (const auto& d : sh) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        bad(fmt::format("shape {} has a non-integer or negative entry", json_excerpt(sh)));
      const uint64_t n = d.get<uint64_t>();
      if (n == 0) empty = true;
      else if (nonzero_product > (uint64_t(1) << 62) / n) bad(fmt::format("shape {} is too large", json_excerpt(sh)));
      else nonzero_product *= n;
      t.shape.push_back(int64_t(n));
    }
    const uint64_t numel = empty ? 0 : nonzero_product;
    if (numel > data_size)
      bad(fmt::format("shape {} holds more elements than the file has bytes ({})", json_excerpt(sh), data_size));
    const json& off = entry.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad(fmt::format("data_offsets {} must be two non-negative integers", json_excerpt(off)));
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) bad(fmt::format("data_offsets [{}, {}] end before they begin", b, e));
    if (e > data_size)
      bad(fmt::format("data_offsets [{}, {}] point past the end of the file (data section is {} bytes): header offsets "
                      "past the end of the file, or the file is truncated",
                      b, e, data_size));
    const uint64_t expect = numel * dtype_size(t.dtype);
    if (e - b != expect)
      bad(fmt::format("shape {} x {} needs {} bytes but data_offsets [{}, {}] span {}", json_excerpt(sh), dtype_name(t.dtype),
                      expect, b, e, e - b));
    t.data = bytes + data_start + b;
    t.nbytes = size_t(e - b);
    // The format allows any offset, but weights are read as float/uint16_t arrays: a tensor whose bytes are not
    // aligned to its element size is copied into an aligned buffer (the mapping's start is page aligned).
    if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
      f->aligned_copies_.emplace_back(new uint64_t[(t.nbytes + 7) / 8]);
      std::memcpy(f->aligned_copies_.back().get(), t.data, t.nbytes);
      t.data = reinterpret_cast<const uint8_t*>(f->aligned_copies_.back().get());
    }
    t.file = &f->path_;
    auto [it, inserted] = f->tensors_.emplace(name, std::move(t));
    ranges.push_back({b, e, &it->first});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  // Empty tensors occupy no bytes and are skipped; each other range is compared with the one reaching furthest
  // so far (comparing neighbours only would miss an overlap with an empty tensor sorted between the two).
  const Range* furthest = nullptr;
  for (const Range& r : ranges) {
    if (r.end == r.begin) continue;
    if (furthest && r.begin < furthest->end)
      format_error(path, fmt::format("tensors \"{}\" [{}, {}) and \"{}\" [{}, {}) overlap", excerpt(*furthest->name),
                                     furthest->begin, furthest->end, excerpt(*r.name), r.begin, r.end));
    if (!furthest || r.end > furthest->end) furthest = &r;
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::unique_ptr<Checkpoint> c(new Checkpoint());
  c->dir_ = dir;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(index)) {
    std::ifstream in(index);
    if (!in) throw Error(ErrorCode::Io, fmt::format("cannot open {}", index.string()));
    json j;
    try {
      std::ostringstream text;
      text << in.rdbuf();
      j = parse_json_input(text.str());
    } catch (const JsonInputError& e) {
      throw Error(ErrorCode::Format, fmt::format("{}: not valid JSON: {}", index.string(), e.what()));
    }
    if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
      throw Error(ErrorCode::Format, fmt::format("{}: has no \"weight_map\" object", index.string()));
    std::map<std::string, SafetensorsFile*> by_shard;
    for (const auto& [name, shard_json] : j.at("weight_map").items()) {
      if (!shard_json.is_string())
        throw Error(ErrorCode::Format, fmt::format("{}: weight_map[\"{}\"] is not a file name", index.string(), excerpt(name)));
      const std::string shard = shard_json.get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        throw Error(ErrorCode::Format, fmt::format("{}: shard name \"{}\" must be a plain file name", index.string(), excerpt(shard)));
      auto it = by_shard.find(shard);
      if (it == by_shard.end()) {
        const fs::path p = fs::path(dir) / shard;
        if (!fs::exists(p))
          throw Error(ErrorCode::Io, fmt::format("missing shard {} (listed in {} for tensor \"{}\")", p.string(),
                                                 index.string(), name));
        c->files_.push_back(SafetensorsFile::open(p.string()));
        it = by_shard.emplace(shard, c->files_.back().get()).first;
      }
      const auto& tensors = it->second->tensors();
      auto t = tensors.find(name);
      if (t == tensors.end())
        throw Error(ErrorCode::Format, fmt::format("{}: tensor \"{}\" is listed in {} but not in the shard",
                                                   it->second->path(), name, index.string()));
      c->index_[name] = &t->second;
    }
    // A tensor stored in two shards would make the index ambiguous.
    std::map<std::string, const std::string*> seen;
    for (const auto& file : c->files_)
      for (const auto& [name, t] : file->tensors()) {
        auto [it, inserted] = seen.emplace(name, &file->path());
        if (!inserted)
          throw Error(ErrorCode::Format, fmt::format("tensor \"{}\" is stored in two shards: {} and {}", name,
                                                     *it->second, file->path()));
      }
  } else if (fs::exists(single)) {
    c->files_.push_back(SafetensorsFile::open(single.string()));
    for (const auto& [name, t] : c->files_.back()->tensors()) c->index_[name] = &t;
  } else {
    throw Error(ErrorCode::Io, fmt::format("{} has neither model.safetensors.index.json nor model.safetensors", dir));
  }
  return c;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

}  // namespace dsinfer
