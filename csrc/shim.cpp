// What satm needs from libtorch that tch does not expose: autocast on CPU (and CUDA with bf16), and generator
// objects of its own (one random stream per thread instead of libtorch's one process-wide generator).
// Kept tiny and C-ABI only; see src/core/amp.rs and src/core/random.rs for the Rust side.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/headeronly/version.h>

#include <mutex>
#include <string>

static at::DeviceType dev_of(int cuda) { return cuda ? at::kCUDA : at::kCPU; }

// The message of the last failed satm_gen_* call on this thread.
static thread_local std::string gen_error;

static at::Generator& gen_of(void* g) { return *static_cast<at::Generator*>(g); }

template <typename F>
static int gen_call(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    gen_error = e.what();
    return -1;
  } catch (...) {
    gen_error = "unknown C++ exception";
    return -1;
  }
}

extern "C" {

// Turns bf16 autocast on or off for the CPU (cuda == 0) or CUDA (cuda != 0), as
// torch.autocast(device, torch.bfloat16, cache_enabled=False) does. The weight-cast cache stays off: libtorch keeps one
// cache for the whole process, and any thread that leaves autocast empties it, so with it on, a thread's results
// depended on when other threads (the prompt, another run, side-by-side workers) left autocast: a weight used twice
// in one forward pass got one cast node (gradients summed in bf16) or two (summed in fp32). Off, every use is cast
// afresh: results are the thread's own, and on an AMX CPU the SATM step ran 10-40% faster (satm bench, bf16_cl).
// Leaving autocast clears the cache, as torch.autocast's __exit__ does.
int satm_set_autocast(int cuda, int on) {
  try {
    auto d = dev_of(cuda);
    if (on) {
      at::autocast::set_autocast_cache_enabled(false);
      at::autocast::set_autocast_dtype(d, at::kBFloat16);
      at::autocast::set_autocast_enabled(d, true);
      at::autocast::increment_nesting();
    } else {
      at::autocast::set_autocast_enabled(d, false);
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    }
    return 0;
  } catch (...) {
    return -1;
  }
}

int satm_autocast_enabled(int cuda) {
  try {
    return at::autocast::is_autocast_enabled(dev_of(cuda)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Whether autocast's weight-cast cache is on for this thread (1/0), or -1 on error.
int satm_autocast_cache_enabled() {
  try {
    return at::autocast::is_autocast_cache_enabled() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// TF32 in cuDNN convolutions and CUDA matrix products on (1) or off (0), as torch.backends.cudnn.allow_tf32 and
// torch.backends.cuda.matmul.allow_tf32 set them; returns the previous cuDNN setting, or -1 on error.
int satm_set_allow_tf32(int on) {
  try {
    auto& ctx = at::globalContext();
    int before = ctx.allowTF32CuDNN() ? 1 : 0;
    ctx.setAllowTF32CuDNN(on != 0);
    ctx.setAllowTF32CuBLAS(on != 0);
    return before;
  } catch (...) {
    return -1;
  }
}

// A CPU generator (the kind torch.Generator() makes) seeded with `seed`; nullptr on failure. Draws from it equal
// those of libtorch's default generator after manual_seed(seed).
void* satm_gen_new(uint64_t seed) {
  try {
    return new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed));
  } catch (...) {
    return nullptr;
  }
}

void satm_gen_free(void* g) { delete static_cast<at::Generator*>(g); }

int satm_gen_seed(void* g, uint64_t seed) {
  return gen_call([&] {
    auto& gen = gen_of(g);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  });
}

// In-place draws into `t` (an at::Tensor*, as tch passes them), as Tensor.normal_ / uniform_ / random_ / bernoulli_
// with `generator=`; 0 on success, -1 with satm_gen_error() set.
int satm_gen_normal_(void* g, void* t, double mean, double std) {
  return gen_call([&] { static_cast<at::Tensor*>(t)->normal_(mean, std, gen_of(g)); });
}

int satm_gen_uniform_(void* g, void* t, double from, double to) {
  return gen_call([&] { static_cast<at::Tensor*>(t)->uniform_(from, to, gen_of(g)); });
}

int satm_gen_random_(void* g, void* t, int64_t from, int64_t to) {
  return gen_call([&] { static_cast<at::Tensor*>(t)->random_(from, to, gen_of(g)); });
}

int satm_gen_bernoulli_(void* g, void* t, double p) {
  return gen_call([&] { static_cast<at::Tensor*>(t)->bernoulli_(p, gen_of(g)); });
}

const char* satm_gen_error() { return gen_error.c_str(); }

// The libtorch version the binary was built against, e.g. "2.13.0".
const char* satm_torch_version() { return TORCH_VERSION; }

// cuDNN's version as libtorch reports it, or -1 when CUDA/cuDNN is absent.
long satm_cudnn_version() {
  try {
    const auto& h = at::detail::getCUDAHooks();
    if (!h.hasCuDNN()) return -1;
    return h.versionCuDNN();
  } catch (...) {
    return -1;
  }
}

}
