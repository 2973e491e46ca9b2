// The cross-front-door scenarios through the C++ API (see scenarios.c).
#include <cstdio>

#include "dsinfer/chat.hpp"
#include "dsinfer/dsinfer.hpp"
#include "dsinfer/session.hpp"

using namespace dsinfer;

namespace {
int code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return int(e.code());
  }
  return 0;
}
void print_generated(const char* name, const Session& s) {
  std::printf("%s:", name);
  const auto& g = s.generated();
  for (size_t i = 0; i < g.size(); ++i) std::printf("%s%d", i ? "," : " ", g[i]);
  std::printf("\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  auto m = Model::load(argv[1]);
  auto t = Tokenizer::load(argv[1]);
  std::printf("load: 0\n");
  SessionParams sp;
  sp.capacity = 256;
  sp.eval.precision = Precision::Reference;
  const std::vector<int32_t> prompt = {0, 100, 200, 300, 400};
  GenerateParams g;
  g.stop_at_eos = false;
  {
    Session s(*m, *t, sp);
    s.prefill(prompt);
    g.max_tokens = 16;
    s.generate(g);
    print_generated("default16", s);
  }
  std::printf("bad_shard: %d null\n", code_of([&] { Model::load(argv[2]); }));
  {
    Session s(*m, *t, sp);
    const std::vector<int32_t> bad = {5, 99999};
    std::printf("bad_token: %d\n", code_of([&] { s.prefill(bad); }));
  }
  std::printf("malformed_tool: %d\n", code_of([] {
                parse_completion("hi\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n"
                                 "</｜DSML｜function_calls><｜end▁of▁sentence｜>", ThinkingMode::Chat);
              }));
  struct Force7 : Sampler {
    std::string name() const override { return "force7"; }
    void apply(Candidates& c) override {
      for (size_t i = 0; i < c.size(); ++i)
        if (c.ids[i] == 7) c.selected = int64_t(i);
    }
    std::unique_ptr<Sampler> clone() const override { return std::make_unique<Force7>(); }
  };
  struct Fails : Sampler {
    std::string name() const override { return "fails"; }
    void apply(Candidates&) override { throw Error(ErrorCode::InvalidArgument, "returned status invalid argument"); }
    std::unique_ptr<Sampler> clone() const override { return std::make_unique<Fails>(); }
  };
  {
    Session s(*m, *t, sp);
    s.prefill(prompt);
    auto chain = std::make_unique<SamplerChain>();
    chain->add(std::make_unique<Force7>());
    s.set_sampler(std::move(chain));
    g.max_tokens = 3;
    s.generate(g);
    print_generated("force_token", s);
  }
  {
    Session s(*m, *t, sp);
    s.prefill(prompt);
    auto chain = std::make_unique<SamplerChain>();
    chain->add(std::make_unique<Fails>());
    s.set_sampler(std::move(chain));
    std::printf("failing_sampler: %d\n", code_of([&] { s.generate(g); }));
  }
  return 0;
}
