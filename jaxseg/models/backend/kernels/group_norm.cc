// GroupNorm followed by an activation, forward and backward, for XLA:CPU through JAX's
// foreign function interface.
//
// Between two of jaxseg's convolutions sits norm -> activation. XLA:CPU computes
// GroupNorm's statistics and the sums of its gradient as reduce-window trees over the
// outer axes and splits the rest into several elementwise passes, several times
// PyTorch's time for the same work (BENCHMARKS.md, "Where the time goes"). Here
// the forward pass reads x twice (statistics, then normalise + activate) and writes y
// once; the backward pass reads x and dy twice (sums, then dx) and writes dx once, as
// PyTorch's kernels do. Arrays are channels-last, (N, *spatial, C), float32 or
// bfloat16; statistics and parameters are float32, sums are accumulated in float32
// within a block of rows and in double across blocks.
//
//   forward:  x, scale, bias                 -> y, mean (N, G), rstd (N, G)
//   backward: dy, x, scale, bias, mean, rstd -> dx, dscale, dbias
//
// y = act((x - mean) * rstd * scale + bias) with act none, ReLU or leaky ReLU; the
// backward pass recomputes the pre-activation from x instead of keeping it.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Activation : int64_t { kNone = 0, kRelu = 1, kLeakyRelu = 2 };

// Rows of the (N * spatial, C) array per task: enough work to amortise a task, few
// enough partial sums to keep them in cache.
constexpr int64_t kRowsPerBlock = 256;

// (N, S, C) view of a channels-last array and its (sample, block of rows) tasks.
struct Layout {
  int64_t n, s, c, groups;
  int64_t blocks_per_sample() const { return (s + kRowsPerBlock - 1) / kRowsPerBlock; }
  int64_t tasks() const { return n * blocks_per_sample(); }
  int64_t channels_per_group() const { return c / groups; }
  // Rows [begin, end) of sample `sample` covered by task `task`.
  void Rows(int64_t task, int64_t* sample, int64_t* begin, int64_t* end) const {
    *sample = task / blocks_per_sample();
    *begin = (task % blocks_per_sample()) * kRowsPerBlock;
    *end = std::min(s, *begin + kRowsPerBlock);
  }
};

Layout MakeLayout(ffi::Span<const int64_t> dims, int64_t groups) {
  int64_t s = 1;
  for (size_t i = 1; i + 1 < dims.size(); ++i) s *= dims[i];
  return {dims[0], s, dims[dims.size() - 1], groups};
}

// Per-sample, per-channel scale a and shift b such that the normalised, affine value
// is x * a + b.
void ScaleShift(const Layout& l, const float* mean, const float* rstd, const float* scale,
                const float* bias, std::vector<float>* a, std::vector<float>* b) {
  a->resize(l.n * l.c);
  b->resize(l.n * l.c);
  for (int64_t i = 0; i < l.n; ++i)
    for (int64_t ch = 0; ch < l.c; ++ch) {
      int64_t g = i * l.groups + ch / l.channels_per_group();
      float ai = rstd[g] * scale[ch];
      (*a)[i * l.c + ch] = ai;
      (*b)[i * l.c + ch] = bias[ch] - mean[g] * ai;
    }
}


}  // namespace

// The passes, compiled once per x86-64 level (group_norm_passes.inc): the wheel must run
// on any x86-64 CPU, so the compiler may assume only SSE2, and the loops on bfloat16
// data (conversions and rounding as integer operations) run much faster in AVX2 or
// AVX-512 registers (BENCHMARKS.md). GCC only: other compilers build the baseline.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define JAXSEG_X86_LEVELS 1
#else
#define JAXSEG_X86_LEVELS 0
#endif

namespace {
namespace baseline {
#include "group_norm_passes.inc"
}  // namespace baseline

#if JAXSEG_X86_LEVELS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace x86_64_v3 {
#include "group_norm_passes.inc"
}  // namespace x86_64_v3
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace x86_64_v4 {
#include "group_norm_passes.inc"
}  // namespace x86_64_v4
#pragma GCC pop_options
#endif

// The `isa` attribute: 0 the best level this CPU has; 1-3 at most that level (tests
// compare the levels' results; a level the CPU lacks falls back to the best it has).
enum Isa : int64_t { kBest = 0, kBaseline = 1, kX86_64_V3 = 2, kX86_64_V4 = 3 };

int64_t SupportedIsa() {
#if JAXSEG_X86_LEVELS
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return kX86_64_V4;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kX86_64_V3;
#endif
  return kBaseline;
}

ffi::Error ChooseIsa(int64_t requested, int64_t* chosen) {
  static const int64_t supported = SupportedIsa();
  if (requested < kBest || requested > kX86_64_V4)
    return ffi::Error::InvalidArgument("group_norm: unknown isa level");
  *chosen = requested == kBest ? supported : std::min(requested, supported);
  return ffi::Error::Success();
}

// The Forward and Backward instances for a level.
template <typename T, int64_t A>
auto ForwardFor(int64_t isa) {
#if JAXSEG_X86_LEVELS
  if (isa == kX86_64_V4) return &x86_64_v4::Forward<T, A>;
  if (isa == kX86_64_V3) return &x86_64_v3::Forward<T, A>;
#endif
  return &baseline::Forward<T, A>;
}

template <typename T, int64_t A>
auto BackwardFor(int64_t isa) {
#if JAXSEG_X86_LEVELS
  if (isa == kX86_64_V4) return &x86_64_v4::Backward<T, A>;
  if (isa == kX86_64_V3) return &x86_64_v3::Backward<T, A>;
#endif
  return &baseline::Backward<T, A>;
}

// Element pointers: bfloat16 buffers are handled as their 16-bit patterns.
template <ffi::DataType T>
using Element = std::conditional_t<T == ffi::DataType::BF16, uint16_t, float>;

template <ffi::DataType T>
const Element<T>* Data(const ffi::Buffer<T>& b) {
  return reinterpret_cast<const Element<T>*>(b.untyped_data());
}
template <ffi::DataType T>
Element<T>* Data(ffi::Result<ffi::Buffer<T>>& b) {
  return reinterpret_cast<Element<T>*>(b->untyped_data());
}

ffi::Error Check(const Layout& l, int64_t scale_size) {
  if (l.groups <= 0 || l.c % l.groups)
    return ffi::Error::InvalidArgument("group_norm: channels not divisible by groups");
  if (scale_size != l.c)
    return ffi::Error::InvalidArgument("group_norm: scale and bias need one value per channel");
  return ffi::Error::Success();
}

// Calls run(std::integral_constant<int64_t, A>) for the activation code A: the kernels
// take the activation as a template argument.
template <typename Run>
ffi::Error WithActivation(int64_t activation, Run run) {
  switch (activation) {
    case kNone: run(std::integral_constant<int64_t, kNone>()); break;
    case kRelu: run(std::integral_constant<int64_t, kRelu>()); break;
    case kLeakyRelu: run(std::integral_constant<int64_t, kLeakyRelu>()); break;
    default: return ffi::Error::InvalidArgument("group_norm: unknown activation");
  }
  return ffi::Error::Success();
}

template <ffi::DataType T>
ffi::Error ForwardHandler(ffi::Buffer<T> x, ffi::Buffer<ffi::F32> scale,
                          ffi::Buffer<ffi::F32> bias, ffi::Result<ffi::Buffer<T>> y,
                          ffi::Result<ffi::Buffer<ffi::F32>> mean,
                          ffi::Result<ffi::Buffer<ffi::F32>> rstd, int64_t groups,
                          float epsilon, int64_t activation, float slope, int64_t isa) {
  Layout l = MakeLayout(x.dimensions(), groups);
  if (auto error = Check(l, scale.element_count()); error.failure()) return error;
  if (auto error = ChooseIsa(isa, &isa); error.failure()) return error;
  return WithActivation(activation, [&](auto a) {
    ForwardFor<Element<T>, decltype(a)::value>(isa)(
        l, Data(x), scale.typed_data(), bias.typed_data(), epsilon, slope, Data(y),
        mean->typed_data(), rstd->typed_data());
  });
}

template <ffi::DataType T>
ffi::Error BackwardHandler(ffi::Buffer<T> dy, ffi::Buffer<T> x, ffi::Buffer<ffi::F32> scale,
                           ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> mean,
                           ffi::Buffer<ffi::F32> rstd, ffi::Result<ffi::Buffer<T>> dx,
                           ffi::Result<ffi::Buffer<ffi::F32>> dscale,
                           ffi::Result<ffi::Buffer<ffi::F32>> dbias, int64_t groups,
                           int64_t activation, float slope, int64_t isa) {
  Layout l = MakeLayout(x.dimensions(), groups);
  if (auto error = Check(l, scale.element_count()); error.failure()) return error;
  if (auto error = ChooseIsa(isa, &isa); error.failure()) return error;
  return WithActivation(activation, [&](auto a) {
    BackwardFor<Element<T>, decltype(a)::value>(isa)(
        l, Data(dy), Data(x), scale.typed_data(), bias.typed_data(), mean.typed_data(),
        rstd.typed_data(), slope, Data(dx), dscale->typed_data(), dbias->typed_data());
  });
}

}  // namespace

// Scale, bias and the per-group statistics are float32 in both passes, which share
// the activation's attributes: the macros say so once.
#define JAXSEG_F32_BUFFER ffi::Buffer<ffi::F32>
#define JAXSEG_ACTIVATION_ATTRS \
  .Attr<int64_t>("activation").Attr<float>("slope").Attr<int64_t>("isa")

#define JAXSEG_GROUP_NORM_HANDLERS(SUFFIX, TYPE)                                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                        \
      jaxseg_group_norm_forward_##SUFFIX, ForwardHandler<TYPE>,                         \
      ffi::Ffi::Bind()                                                                  \
          .Arg<ffi::Buffer<TYPE>>().Arg<JAXSEG_F32_BUFFER>().Arg<JAXSEG_F32_BUFFER>()   \
          .Ret<ffi::Buffer<TYPE>>().Ret<JAXSEG_F32_BUFFER>().Ret<JAXSEG_F32_BUFFER>()   \
          .Attr<int64_t>("groups").Attr<float>("epsilon") JAXSEG_ACTIVATION_ATTRS);     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                        \
      jaxseg_group_norm_backward_##SUFFIX, BackwardHandler<TYPE>,                       \
      ffi::Ffi::Bind()                                                                  \
          .Arg<ffi::Buffer<TYPE>>().Arg<ffi::Buffer<TYPE>>()                            \
          .Arg<JAXSEG_F32_BUFFER>().Arg<JAXSEG_F32_BUFFER>()                            \
          .Arg<JAXSEG_F32_BUFFER>().Arg<JAXSEG_F32_BUFFER>()                            \
          .Ret<ffi::Buffer<TYPE>>().Ret<JAXSEG_F32_BUFFER>().Ret<JAXSEG_F32_BUFFER>()   \
          .Attr<int64_t>("groups") JAXSEG_ACTIVATION_ATTRS);

JAXSEG_GROUP_NORM_HANDLERS(f32, ffi::DataType::F32)
JAXSEG_GROUP_NORM_HANDLERS(bf16, ffi::DataType::BF16)

// The best x86-64 level this CPU runs the passes at (1 baseline, 2 v3, 3 v4), for
// fused_norm.supported_isa: benchmarks and tests name the level they measured.
extern "C" int64_t jaxseg_group_norm_supported_isa() { return SupportedIsa(); }
