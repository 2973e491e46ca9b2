// Issue 7: after warm-up, a single-token decode step through the model makes no heap allocation.
//
// This binary replaces the global operator new / operator delete (every usual overload: plain, array, nothrow,
// aligned, sized) and, on glibc, malloc and its relatives with versions that count calls while `g_counting` is
// on, which it is only around the measured decode steps. operator new is counted apart from malloc (it takes its
// memory from glibc's allocator directly, so one `new` is not counted twice). Backend buffers come from
// aligned_alloc, so they show up in the malloc count.
//
// To see who allocates: DSINFER_ALLOC_TRACE=1 prints each counted allocation's size and a backtrace to stderr
// (the binary is linked with -rdynamic, so functions with external linkage are named; for the others
// `addr2line -f -C -e test_decode_allocations +0xOFFSET` names them).
#include <catch2/catch.hpp>
#include <execinfo.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "dsinfer/model.hpp"

#if defined(__has_feature)  // clang says so with __has_feature, GCC with __SANITIZE_*__
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DSINFER_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(DSINFER_SANITIZED)
#define DSINFER_COUNT_ALLOCATIONS 0  // the sanitizers own the allocator
#else
#define DSINFER_COUNT_ALLOCATIONS 1
#endif
#if DSINFER_COUNT_ALLOCATIONS && defined(__GLIBC__)
#define DSINFER_COUNT_MALLOC 1  // glibc lets a program replace malloc and exports its own as __libc_*
#else
#define DSINFER_COUNT_MALLOC 0
#endif

namespace {

std::atomic<bool> g_counting{false};
std::atomic<long> g_news{0}, g_mallocs{0};
bool g_trace = false;
thread_local bool t_tracing = false;  // set while a backtrace is printed: what that allocates is not counted

[[maybe_unused]] void note(std::atomic<long>& counter, const char* what, size_t bytes) {  // (unused in sanitizer builds)
  if (!g_counting.load(std::memory_order_relaxed) || t_tracing) return;
  counter.fetch_add(1, std::memory_order_relaxed);
  if (!g_trace) return;
  static std::mutex trace_mutex;  // one backtrace at a time (the pool's threads allocate too)
  std::lock_guard<std::mutex> lock(trace_mutex);
  t_tracing = true;
  char line[96];
  const int n = std::snprintf(line, sizeof line, "\n[alloc] %s(%zu bytes) from:\n", what, bytes);
  if (n > 0) (void)!write(2, line, size_t(n));
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  t_tracing = false;
}

}  // namespace

#if DSINFER_COUNT_MALLOC
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);

void* malloc(size_t n) noexcept {
  note(g_mallocs, "malloc", n);
  return __libc_malloc(n);
}
void* calloc(size_t count, size_t n) noexcept {
  note(g_mallocs, "calloc", count * n);
  return __libc_calloc(count, n);
}
void* realloc(void* p, size_t n) noexcept {
  note(g_mallocs, "realloc", n);
  return __libc_realloc(p, n);
}
void* memalign(size_t align, size_t n) noexcept {
  note(g_mallocs, "memalign", n);
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) noexcept {
  note(g_mallocs, "aligned_alloc", n);
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) noexcept {
  if (align % sizeof(void*) != 0 || (align & (align - 1)) != 0) return EINVAL;
  note(g_mallocs, "posix_memalign", n);
  void* p = __libc_memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void free(void* p) noexcept { __libc_free(p); }
}
#define RAW_MALLOC(n) __libc_malloc(n)
#define RAW_MEMALIGN(a, n) __libc_memalign(a, n)
#define RAW_FREE(p) __libc_free(p)
#else
#define RAW_MALLOC(n) std::malloc(n)
#define RAW_MEMALIGN(a, n) std::aligned_alloc(a, ((n) + (a) - 1) / (a) * (a))
#define RAW_FREE(p) std::free(p)
#endif

#if DSINFER_COUNT_ALLOCATIONS
namespace {
void* counted_new(size_t n, size_t align, bool nothrow) {
  note(g_news, align ? "operator new(aligned)" : "operator new", n);
  if (n == 0) n = 1;
  void* p = align ? RAW_MEMALIGN(align, n) : RAW_MALLOC(n);
  if (!p && !nothrow) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(size_t n) { return counted_new(n, 0, false); }
void* operator new[](size_t n) { return counted_new(n, 0, false); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0, true); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0, true); }
void* operator new(size_t n, std::align_val_t a) { return counted_new(n, size_t(a), false); }
void* operator new[](size_t n, std::align_val_t a) { return counted_new(n, size_t(a), false); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_new(n, size_t(a), true); }
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return counted_new(n, size_t(a), true); }

void operator delete(void* p) noexcept { RAW_FREE(p); }
void operator delete[](void* p) noexcept { RAW_FREE(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { RAW_FREE(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { RAW_FREE(p); }
void operator delete(void* p, size_t) noexcept { RAW_FREE(p); }
void operator delete[](void* p, size_t) noexcept { RAW_FREE(p); }
void operator delete(void* p, std::align_val_t) noexcept { RAW_FREE(p); }
void operator delete[](void* p, std::align_val_t) noexcept { RAW_FREE(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { RAW_FREE(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { RAW_FREE(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { RAW_FREE(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { RAW_FREE(p); }
#endif

using namespace dsinfer;
namespace fs = std::filesystem;

namespace {

struct Counts {
  long news = 0, mallocs = 0;
};

int32_t argmax(const std::vector<float>& logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Loads the checkpoint, prefills a prompt longer than index_topk (so the indexer selects keys), runs `warmup`
// greedy decode steps and counts the allocations of the next `measured` ones. Small cache blocks make the
// measured steps start new blocks too.
Counts count_decode_allocations(const std::string& preset, Precision precision, int n_threads, int warmup,
                                int measured) {
  const fs::path dir = fs::path(DSINFER_MODELS_DIR) / preset;
  INFO("small checkpoint " << dir << " (made by scripts/make_small_checkpoint.py; ctest runs it first)");
  REQUIRE(fs::exists(dir / "config.json"));
  ModelLoadParams lp;
  lp.n_threads = n_threads;
  lp.kv_block_tokens = 4;
  auto model = Model::load(dir.string(), lp);
  REQUIRE(model->info().index_topk < 20);

  EvalOptions opts;
  opts.precision = precision;
  auto seq = model->new_sequence(64);
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 20; ++i) prompt.push_back((i * 733 + 17) % int32_t(model->info().vocab_size));
  std::vector<Model::BatchEntry> batch(1);
  batch[0].sequence = seq.get();
  batch[0].ids = prompt;
  model->eval_batch(batch, opts);
  REQUIRE(int64_t(batch[0].logits.size()) == model->info().vocab_size);

  int32_t next = argmax(batch[0].logits);
  batch[0].ids = std::span<const int32_t>(&next, 1);
  for (int i = 0; i < warmup; ++i) {
    model->eval_batch(batch, opts);
    next = argmax(batch[0].logits);
  }
  g_news = 0;
  g_mallocs = 0;
  g_counting = true;
  for (int i = 0; i < measured; ++i) {
    model->eval_batch(batch, opts);
    next = argmax(batch[0].logits);
  }
  g_counting = false;
  REQUIRE(seq->size() == int64_t(prompt.size()) + warmup + measured);
  return {g_news.load(), g_mallocs.load()};
}

}  // namespace

TEST_CASE("a warm single-token decode step makes no heap allocation", "[alloc]") {
  if (!DSINFER_COUNT_ALLOCATIONS) {
    WARN("allocations are not counted under a sanitizer");
    return;
  }
  g_trace = std::getenv("DSINFER_ALLOC_TRACE") && std::string(std::getenv("DSINFER_ALLOC_TRACE")) != "0";
  void* frames[4];
  backtrace(frames, 4);  // loads the unwinder now rather than inside the first traced allocation

  constexpr int kWarmup = 3, kMeasured = 8;
  for (Precision precision : {Precision::Fp8, Precision::Reference}) {
    for (int threads : {1, 2}) {
      const char* name = precision == Precision::Fp8 ? "fp8" : "reference";
      if (g_trace) std::fprintf(stderr, "\n===== %s, %d thread(s) =====\n", name, threads);
      const Counts c = count_decode_allocations("v32-tiny", precision, threads, kWarmup, kMeasured);
      std::printf("%s, %d thread(s): %d decode steps made %ld operator new and %ld malloc-family calls\n", name,
                  threads, kMeasured, c.news, c.mallocs);
      INFO(name << " precision, " << threads << " thread(s), " << kMeasured << " warm decode steps");
      CHECK(c.news == 0);
      CHECK(c.mallocs == 0);
    }
  }
}
