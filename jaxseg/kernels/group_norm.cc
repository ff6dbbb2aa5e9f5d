// GroupNorm followed by an activation, forward and backward, for XLA:CPU through JAX's
// foreign function interface.
//
// Between two of jaxseg's convolutions sits norm -> activation. XLA:CPU computes
// GroupNorm's statistics and the sums of its gradient as reduce-window trees over the
// outer axes and splits the rest into several elementwise passes; together they took
// 2.7-3.2x PyTorch's time for the same work (BENCHMARKS.md, "Where the time goes"). Here
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

inline float ToFloat(float v) { return v; }
inline float ToFloat(uint16_t v) {  // bfloat16 bits -> float32
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void Store(float* p, float v) { *p = v; }
inline void Store(uint16_t* p, float v) {  // float32 -> bfloat16, round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  *p = uint16_t(nan ? ((bits >> 16) | 0x40u) : rounded);
}

// The activation is a template argument so that the inner loops have no branch
// (a select each), which keeps them vectorised for any instruction set.
template <int64_t A>
inline float Activate(float z, float slope) {
  if (A == kRelu) return z > 0.f ? z : 0.f;
  if (A == kLeakyRelu) return z > 0.f ? z : slope * z;
  return z;
}
// The gradient before the activation, given the one after it (dy) and the input z.
template <int64_t A>
inline float ActivationBackward(float z, float dy, float slope) {
  if (A == kRelu) return z > 0.f ? dy : 0.f;
  if (A == kLeakyRelu) return z > 0.f ? dy : slope * dy;
  return dy;
}

// One row (one voxel's C channels) of each pass. __restrict: without it the compiler
// guards every loop with runtime overlap checks whose cost makes it keep the scalar
// loop for the narrow rows of a U-Net's first levels (8-32 channels), 5x slower.
template <typename T>
inline void SumRow(const T* __restrict x, int64_t c, float* __restrict sum,
                   float* __restrict sum_sq) {
  for (int64_t ch = 0; ch < c; ++ch) {
    float v = ToFloat(x[ch]);
    sum[ch] += v;
    sum_sq[ch] += v * v;
  }
}

template <typename T, int64_t A>
inline void NormaliseRow(const T* __restrict x, const float* __restrict a,
                         const float* __restrict b, float slope, int64_t c, T* __restrict y) {
  for (int64_t ch = 0; ch < c; ++ch) Store(y + ch, Activate<A>(ToFloat(x[ch]) * a[ch] + b[ch], slope));
}

template <typename T, int64_t A>
inline void GradSumRow(const T* __restrict x, const T* __restrict dy, const float* __restrict a,
                       const float* __restrict b, float slope, int64_t c,
                       float* __restrict sum_dz, float* __restrict sum_dzx) {
  for (int64_t ch = 0; ch < c; ++ch) {
    float v = ToFloat(x[ch]);
    float dz = ActivationBackward<A>(v * a[ch] + b[ch], ToFloat(dy[ch]), slope);
    sum_dz[ch] += dz;
    sum_dzx[ch] += dz * v;
  }
}

template <typename T, int64_t A>
inline void GradRow(const T* __restrict x, const T* __restrict dy, const float* __restrict a,
                    const float* __restrict b, const float* __restrict p,
                    const float* __restrict q, const float* __restrict r, float slope,
                    int64_t c, T* __restrict dx) {
  for (int64_t ch = 0; ch < c; ++ch) {
    float v = ToFloat(x[ch]);
    float dz = ActivationBackward<A>(v * a[ch] + b[ch], ToFloat(dy[ch]), slope);
    Store(dx + ch, p[ch] * dz + q[ch] * v + r[ch]);
  }
}

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

template <typename T, int64_t A>
void Forward(const Layout& l, const T* x, const float* scale, const float* bias, float epsilon,
             float slope, T* y, float* mean, float* rstd) {
  const int64_t tasks = l.tasks(), c = l.c;
  // Pass 1: per task, per channel sums of x and x^2.
  std::vector<float> partial(tasks * 2 * c);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) {
    int64_t i, begin, end;
    l.Rows(t, &i, &begin, &end);
    float* sum = &partial[t * 2 * c];
    float* sum_sq = sum + c;
    std::fill(sum, sum + 2 * c, 0.f);
    for (int64_t r = begin; r < end; ++r) SumRow(x + (i * l.s + r) * c, c, sum, sum_sq);
  }
  // Statistics per (sample, group), in double.
  const int64_t cg = l.channels_per_group(), blocks = l.blocks_per_sample();
  const double count = double(l.s) * cg;
  for (int64_t i = 0; i < l.n; ++i)
    for (int64_t g = 0; g < l.groups; ++g) {
      double s1 = 0, s2 = 0;
      for (int64_t k = 0; k < blocks; ++k) {
        const float* sum = &partial[(i * blocks + k) * 2 * c];
        for (int64_t ch = g * cg; ch < (g + 1) * cg; ++ch) {
          s1 += sum[ch];
          s2 += sum[c + ch];
        }
      }
      double m = s1 / count, var = std::max(0.0, s2 / count - m * m);
      mean[i * l.groups + g] = float(m);
      rstd[i * l.groups + g] = float(1.0 / std::sqrt(var + epsilon));
    }
  // Pass 2: y = act(x * a + b).
  std::vector<float> a, b;
  ScaleShift(l, mean, rstd, scale, bias, &a, &b);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) {
    int64_t i, begin, end;
    l.Rows(t, &i, &begin, &end);
    const float* ai = &a[i * c];
    const float* bi = &b[i * c];
    for (int64_t r = begin; r < end; ++r) {
      int64_t at = (i * l.s + r) * c;
      NormaliseRow<T, A>(x + at, ai, bi, slope, c, y + at);
    }
  }
}

template <typename T, int64_t A>
void Backward(const Layout& l, const T* dy, const T* x, const float* scale, const float* bias,
              const float* mean, const float* rstd, float slope, T* dx,
              float* dscale, float* dbias) {
  const int64_t tasks = l.tasks(), c = l.c;
  std::vector<float> a, b;
  ScaleShift(l, mean, rstd, scale, bias, &a, &b);
  // Pass 1: per task, per channel sums of dz and dz * x, dz the gradient before the
  // activation (recomputed from x).
  std::vector<float> partial(tasks * 2 * c);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) {
    int64_t i, begin, end;
    l.Rows(t, &i, &begin, &end);
    const float* ai = &a[i * c];
    const float* bi = &b[i * c];
    float* sum_dz = &partial[t * 2 * c];
    float* sum_dzx = sum_dz + c;
    std::fill(sum_dz, sum_dz + 2 * c, 0.f);
    for (int64_t r = begin; r < end; ++r) {
      int64_t at = (i * l.s + r) * c;
      GradSumRow<T, A>(x + at, dy + at, ai, bi, slope, c, sum_dz, sum_dzx);
    }
  }
  // Per (sample, channel) sums in double; the parameters' gradients; per (sample,
  // channel) coefficients of dx = p * dz + q * x + r.
  const int64_t cg = l.channels_per_group(), blocks = l.blocks_per_sample();
  const double count = double(l.s) * cg;
  std::vector<double> dscale_sum(c, 0.0), dbias_sum(c, 0.0);
  std::vector<float> p(l.n * c), q(l.n * c), r(l.n * c);
  std::vector<double> sdz(c), sdzx(c);
  for (int64_t i = 0; i < l.n; ++i) {
    std::fill(sdz.begin(), sdz.end(), 0.0);
    std::fill(sdzx.begin(), sdzx.end(), 0.0);
    for (int64_t k = 0; k < blocks; ++k) {
      const float* part = &partial[(i * blocks + k) * 2 * c];
      for (int64_t ch = 0; ch < c; ++ch) {
        sdz[ch] += part[ch];
        sdzx[ch] += part[c + ch];
      }
    }
    for (int64_t g = 0; g < l.groups; ++g) {
      const double m = mean[i * l.groups + g], inv = rstd[i * l.groups + g];
      double m1 = 0, m2 = 0;  // group means of dxhat and of dxhat * xhat
      for (int64_t ch = g * cg; ch < (g + 1) * cg; ++ch) {
        double dz_xhat = inv * (sdzx[ch] - m * sdz[ch]);  // sum of dz * xhat
        dbias_sum[ch] += sdz[ch];
        dscale_sum[ch] += dz_xhat;
        m1 += scale[ch] * sdz[ch];
        m2 += scale[ch] * dz_xhat;
      }
      m1 /= count;
      m2 /= count;
      for (int64_t ch = g * cg; ch < (g + 1) * cg; ++ch) {
        p[i * c + ch] = float(inv * scale[ch]);
        q[i * c + ch] = float(-inv * inv * m2);
        r[i * c + ch] = float(inv * inv * m2 * m - inv * m1);
      }
    }
  }
  for (int64_t ch = 0; ch < c; ++ch) {
    dscale[ch] = float(dscale_sum[ch]);
    dbias[ch] = float(dbias_sum[ch]);
  }
  // Pass 2: dx.
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) {
    int64_t i, begin, end;
    l.Rows(t, &i, &begin, &end);
    const float *ai = &a[i * c], *bi = &b[i * c];
    const float *pi = &p[i * c], *qi = &q[i * c], *ri = &r[i * c];
    for (int64_t row = begin; row < end; ++row) {
      int64_t at = (i * l.s + row) * c;
      GradRow<T, A>(x + at, dy + at, ai, bi, pi, qi, ri, slope, c, dx + at);
    }
  }
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
                          float epsilon, int64_t activation, float slope) {
  Layout l = MakeLayout(x.dimensions(), groups);
  if (auto error = Check(l, scale.element_count()); error.failure()) return error;
  return WithActivation(activation, [&](auto a) {
    Forward<Element<T>, decltype(a)::value>(l, Data(x), scale.typed_data(), bias.typed_data(),
                                            epsilon, slope, Data(y), mean->typed_data(),
                                            rstd->typed_data());
  });
}

template <ffi::DataType T>
ffi::Error BackwardHandler(ffi::Buffer<T> dy, ffi::Buffer<T> x, ffi::Buffer<ffi::F32> scale,
                           ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> mean,
                           ffi::Buffer<ffi::F32> rstd, ffi::Result<ffi::Buffer<T>> dx,
                           ffi::Result<ffi::Buffer<ffi::F32>> dscale,
                           ffi::Result<ffi::Buffer<ffi::F32>> dbias, int64_t groups,
                           int64_t activation, float slope) {
  Layout l = MakeLayout(x.dimensions(), groups);
  if (auto error = Check(l, scale.element_count()); error.failure()) return error;
  return WithActivation(activation, [&](auto a) {
    Backward<Element<T>, decltype(a)::value>(
        l, Data(dy), Data(x), scale.typed_data(), bias.typed_data(), mean.typed_data(),
        rstd.typed_data(), slope, Data(dx), dscale->typed_data(), dbias->typed_data());
  });
}

}  // namespace

#define JAXSEG_GROUP_NORM_HANDLERS(SUFFIX, TYPE)                                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                      \
      jaxseg_group_norm_forward_##SUFFIX, ForwardHandler<TYPE>,                       \
      ffi::Ffi::Bind()                                                                \
          .Arg<ffi::Buffer<TYPE>>()                                                   \
          .Arg<ffi::Buffer<ffi::F32>>()                                               \
          .Arg<ffi::Buffer<ffi::F32>>()                                               \
          .Ret<ffi::Buffer<TYPE>>()                                                   \
          .Ret<ffi::Buffer<ffi::F32>>()                                               \
          .Ret<ffi::Buffer<ffi::F32>>()                                               \
          .Attr<int64_t>("groups")                                                    \
          .Attr<float>("epsilon")                                                     \
          .Attr<int64_t>("activation")                                                \
          .Attr<float>("slope"));                                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                      \
      jaxseg_group_norm_backward_##SUFFIX, BackwardHandler<TYPE>,                     \
      ffi::Ffi::Bind()                                                                \
          .Arg<ffi::Buffer<TYPE>>()                                                   \
          .Arg<ffi::Buffer<TYPE>>()                                                   \
          .Arg<ffi::Buffer<ffi::F32>>()                                               \
          .Arg<ffi::Buffer<ffi::F32>>()                                               \
          .Arg<ffi::Buffer<ffi::F32>>()                                               \
          .Arg<ffi::Buffer<ffi::F32>>()                                               \
          .Ret<ffi::Buffer<TYPE>>()                                                   \
          .Ret<ffi::Buffer<ffi::F32>>()                                               \
          .Ret<ffi::Buffer<ffi::F32>>()                                               \
          .Attr<int64_t>("groups")                                                    \
          .Attr<int64_t>("activation")                                                \
          .Attr<float>("slope"));

JAXSEG_GROUP_NORM_HANDLERS(f32, ffi::DataType::F32)
JAXSEG_GROUP_NORM_HANDLERS(bf16, ffi::DataType::BF16)
