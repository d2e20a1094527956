// What satm needs from libtorch that tch does not expose: autocast on CPU (and CUDA with bf16).
// Kept tiny and C-ABI only; see src/core/amp.rs for the Rust side.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/headeronly/version.h>

static at::DeviceType dev_of(int cuda) { return cuda ? at::kCUDA : at::kCPU; }

extern "C" {

// Turns bf16 autocast on or off for the CPU (cuda == 0) or CUDA (cuda != 0).
// Leaving autocast clears its weight-cast cache, as torch.autocast's __exit__ does.
int satm_set_autocast(int cuda, int on) {
  try {
    auto d = dev_of(cuda);
    if (on) {
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
