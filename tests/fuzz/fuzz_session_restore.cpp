// Session files (Session::restore): every input either restores a session that then generates, or is refused with
// dsinfer::Error, without allocating more than the file and the model justify. The model is the small generated
// checkpoint (DSINFER_MODELS_DIR/v32-tiny), loaded once; the seeds are session files saved from it.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "dsinfer/error.hpp"
#include "dsinfer/session.hpp"
#include "fuzz_input.hpp"

namespace {
struct Loaded {
  std::unique_ptr<dsinfer::Model> model;
  std::unique_ptr<dsinfer::Tokenizer> tok;
};
const Loaded& loaded() {
  static const Loaded l = [] {
    const std::string dir = std::string(DSINFER_MODELS_DIR) + "/v32-tiny";
    dsinfer::ModelLoadParams p;
    p.n_threads = 1;
    p.kv_cache_tokens = 1024;
    return Loaded{dsinfer::Model::load(dir, p), dsinfer::Tokenizer::load(dir)};
  }();
  return l;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dsinfer;
  const Loaded& l = loaded();
  const std::string path = fuzz::write_file("fuzz.session", fuzz::as_text(data, size));
  SessionParams sp;
  sp.capacity = 64;
  Session s(*l.model, *l.tok, sp);
  try {
    s.restore(path);
  } catch (const Error&) {
    return 0;
  }
  // Restored: the session must be usable (its sizes were checked, so sampling reads real logits).
  try {
    GenerateParams g;
    g.max_tokens = 2;
    g.stop_at_eos = false;
    s.generate(g);
  } catch (const Error&) {
  }
  return 0;
}
