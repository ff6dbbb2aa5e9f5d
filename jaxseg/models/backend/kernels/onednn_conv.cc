// oneDNN convolutions for XLA:CPU, called through JAX's foreign function interface.
//
// jaxseg's convolutions are all 'SAME', stride 1, channels-last: (N, *spatial, C)
// activations and (*window, C_in, C_out) kernels, 2D or 3D. XLA:CPU computes a
// weight gradient after transposing both of its operands, and bfloat16 convolutions in
// float32; oneDNN, the library PyTorch's CPU path uses, does neither. The three passes
// of a convolution are three handlers; jaxseg/models/onednn.py wires them into a
// custom VJP. Primitives are created once per shape and kept (creating one costs far
// more than running a small one).
//
// XLA:CPU runs custom calls on whichever of its threads is free, several at a time, so a
// kept primitive runs on threads other than the one that created it, concurrently. In
// oneDNN's default scratchpad mode a primitive's temporary buffer is a thread-local of
// the thread that created it: run elsewhere it finds that thread's buffer null or too
// small (a GEMM-based convolution's im2col buffer, chosen on AVX2 CPUs, crashed so).
// Every primitive here is therefore created with a user-managed scratchpad, and each
// call passes its own, held by the calling thread for the duration of the call.

#include <array>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

enum class Pass { kForward, kBackwardData, kBackwardWeights };

dnnl::engine& CpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The shapes of one convolution of spatial rank 2 or 3: x (n, *size, ci), kernel
// (*window, ci, co), y (n, *size, co). Unused trailing entries of size and window are 1.
struct Shape {
  int64_t rank, n, ci, co;
  std::array<int64_t, 3> size, window;
  memory::data_type type;
  auto Tie() const { return std::tie(rank, n, ci, co, size, window, type); }
  bool operator<(const Shape& other) const { return Tie() < other.Tie(); }
  // oneDNN orders dimensions (n, c, *spatial) whatever the memory layout (the tag).
  memory::dims Dims(int64_t first, int64_t second, const std::array<int64_t, 3>& spatial) const {
    memory::dims dims{first, second};
    dims.insert(dims.end(), spatial.begin(), spatial.begin() + rank);
    return dims;
  }
  Tag ActivationTag() const { return rank == 2 ? Tag::nhwc : Tag::ndhwc; }
  memory::desc Src() const { return {Dims(n, ci, size), type, ActivationTag()}; }
  memory::desc Dst() const { return {Dims(n, co, size), type, ActivationTag()}; }
  memory::desc Weights(Tag tag) const { return {Dims(co, ci, window), type, tag}; }
  memory::desc Weights() const { return Weights(rank == 2 ? Tag::hwio : Tag::dhwio); }
  memory::dims Strides() const { return memory::dims(rank, 1); }
  memory::dims PadLow() const {
    memory::dims pad(rank);
    for (int64_t i = 0; i < rank; ++i) pad[i] = (window[i] - 1) / 2;
    return pad;
  }
  memory::dims PadHigh() const {
    memory::dims pad(rank);
    for (int64_t i = 0; i < rank; ++i) pad[i] = window[i] - 1 - (window[i] - 1) / 2;
    return pad;
  }
};

// The Shape of the convolution of x (activation dimensions) with a kernel (window
// dimensions); false for a rank other than 2 or 3 or dimensions that do not match.
bool MakeShape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> kernel,
               memory::data_type type, Shape* s) {
  const int64_t rank = int64_t(x.size()) - 2;
  if ((rank != 2 && rank != 3) || int64_t(kernel.size()) != rank + 2 ||
      kernel[rank] != x[rank + 1])
    return false;
  *s = Shape{rank, x[0], x[rank + 1], kernel[rank + 1], {1, 1, 1}, {1, 1, 1}, type};
  for (int64_t i = 0; i < rank; ++i) {
    s->size[i] = x[1 + i];
    s->window[i] = kernel[i];
  }
  return true;
}

// One pass ready to run: the primitive and the weights layout it chose.
struct Kernel {
  dnnl::primitive primitive;
  memory::desc weights;     // the primitive's (maybe blocked) weights layout
  memory::desc scratchpad;  // the temporary buffer one execution needs
};

// Every primitive takes its scratchpad from the caller (see the top of the file).
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// Activations stay NHWC (a reorder of them would cost a pass, the thing avoided here);
// the weights may take whatever layout oneDNN prefers: they are small.
dnnl::convolution_forward::primitive_desc ForwardHint(const Shape& s) {
  return {CpuEngine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          s.Src(), s.Weights(Tag::any), s.Dst(), s.Strides(), s.PadLow(), s.PadHigh(),
          UserScratchpad()};
}

Kernel MakeKernel(Pass pass, const Shape& s) {
  auto forward = ForwardHint(s);
  switch (pass) {
    case Pass::kForward:
      return {dnnl::convolution_forward(forward), forward.weights_desc(),
              forward.scratchpad_desc()};
    case Pass::kBackwardData: {
      dnnl::convolution_backward_data::primitive_desc pd(
          CpuEngine(), dnnl::algorithm::convolution_direct, s.Src(), s.Weights(Tag::any),
          s.Dst(), s.Strides(), s.PadLow(), s.PadHigh(), forward, UserScratchpad());
      return {dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc()};
    }
    case Pass::kBackwardWeights: {
      dnnl::convolution_backward_weights::primitive_desc pd(
          CpuEngine(), dnnl::algorithm::convolution_direct, s.Src(), s.Weights(Tag::any),
          s.Dst(), s.Strides(), s.PadLow(), s.PadHigh(), forward, UserScratchpad());
      return {dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(),
              pd.scratchpad_desc()};
    }
  }
  return {};
}

const Kernel& GetKernel(Pass pass, const Shape& shape) {
  static std::mutex mutex;
  static std::map<std::pair<Pass, Shape>, Kernel> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_pair(pass, shape);
  auto found = cache.find(key);
  if (found == cache.end()) found = cache.emplace(key, MakeKernel(pass, shape)).first;
  return found->second;
}

template <ffi::DataType T>
memory::data_type OneDnnType() {
  return T == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

// This thread's scratchpad for one execution of `k`. A call runs to its end on the
// thread that made it (stream.wait), so a buffer per thread is never shared by two
// executions at once; it grows to the largest a thread has needed and is kept.
memory Scratchpad(const Kernel& k) {
  thread_local memory buffer;
  thread_local size_t size = 0;
  const size_t needed = k.scratchpad.get_size();
  if (needed > size) {
    buffer = memory(memory::desc({int64_t(needed)}, memory::data_type::u8, Tag::a),
                    CpuEngine());
    size = needed;
  }
  // A view of this execution's size over the thread's buffer.
  return memory(k.scratchpad, CpuEngine(), size ? buffer.get_data_handle() : nullptr);
}

// A pass that reads the kernel: the kernel is reordered into the primitive's layout
// (small), the activations are used where they are.
void RunReadingKernel(Pass pass, const Shape& s, const memory::desc& in_desc, void* in,
                      int in_arg, const memory::desc& out_desc, void* out, int out_arg,
                      void* kernel) {
  const Kernel& k = GetKernel(pass, s);
  dnnl::stream stream(CpuEngine());
  memory input(in_desc, CpuEngine(), in), output(out_desc, CpuEngine(), out);
  memory weights(s.Weights(), CpuEngine(), kernel);
  if (k.weights != s.Weights()) {
    memory blocked(k.weights, CpuEngine());
    dnnl::reorder(weights, blocked).execute(stream, weights, blocked);
    weights = blocked;
  }
  k.primitive.execute(stream, {{in_arg, input}, {DNNL_ARG_WEIGHTS, weights}, {out_arg, output},
                               {DNNL_ARG_SCRATCHPAD, Scratchpad(k)}});
  stream.wait();
}

// oneDNN reports failures (e.g. no implementation for this type on this CPU) as C++
// exceptions, which must not cross XLA's C interface: they become the call's error.
template <typename Body>
ffi::Error Guarded(Body body) {
  try {
    body();
    return ffi::Error::Success();
  } catch (const std::exception& error) {  // dnnl::error among them
    return ffi::Error::Internal(std::string("jaxseg oneDNN convolution: ") + error.what());
  }
}

ffi::Error BadShapes() {
  return ffi::Error::InvalidArgument(
      "jaxseg oneDNN convolution: needs 2D or 3D channels-last activations and a kernel "
      "of the same rank whose input channels match theirs");
}

// x, kernel -> y
template <ffi::DataType T>
ffi::Error Forward(ffi::Buffer<T> x, ffi::Buffer<T> kernel, ffi::ResultBuffer<T> y) {
  Shape s;
  if (!MakeShape(x.dimensions(), kernel.dimensions(), OneDnnType<T>(), &s)) return BadShapes();
  return Guarded([&] {
    RunReadingKernel(Pass::kForward, s, s.Src(), x.untyped_data(), DNNL_ARG_SRC, s.Dst(),
                     y->untyped_data(), DNNL_ARG_DST, kernel.untyped_data());
  });
}

// dy, kernel -> dx
template <ffi::DataType T>
ffi::Error BackwardData(ffi::Buffer<T> dy, ffi::Buffer<T> kernel, ffi::ResultBuffer<T> dx) {
  Shape s;
  if (!MakeShape(dx->dimensions(), kernel.dimensions(), OneDnnType<T>(), &s)) return BadShapes();
  return Guarded([&] {
    RunReadingKernel(Pass::kBackwardData, s, s.Dst(), dy.untyped_data(), DNNL_ARG_DIFF_DST,
                     s.Src(), dx->untyped_data(), DNNL_ARG_DIFF_SRC, kernel.untyped_data());
  });
}

// x, dy -> dkernel
template <ffi::DataType T>
ffi::Error BackwardWeights(ffi::Buffer<T> x, ffi::Buffer<T> dy, ffi::ResultBuffer<T> dkernel) {
  Shape s;
  if (!MakeShape(x.dimensions(), dkernel->dimensions(), OneDnnType<T>(), &s)) return BadShapes();
  return Guarded([&] {
    const Kernel& k = GetKernel(Pass::kBackwardWeights, s);
    dnnl::stream stream(CpuEngine());
    memory src(s.Src(), CpuEngine(), x.untyped_data());
    memory diff_dst(s.Dst(), CpuEngine(), dy.untyped_data());
    memory diff_weights(s.Weights(), CpuEngine(), dkernel->untyped_data());
    memory computed = k.weights == s.Weights() ? diff_weights : memory(k.weights, CpuEngine());
    k.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                                 {DNNL_ARG_DIFF_WEIGHTS, computed},
                                 {DNNL_ARG_SCRATCHPAD, Scratchpad(k)}});
    if (k.weights != s.Weights())
      dnnl::reorder(computed, diff_weights).execute(stream, computed, diff_weights);
    stream.wait();
  });
}

}  // namespace

// Whether this CPU (as capped by ONEDNN_MAX_CPU_ISA) has oneDNN convolutions of every
// pass in bfloat16: they need AVX-512 BF16 or AMX units, and creating one fails
// elsewhere. onednn.py asks once and converts to float32 where not.
extern "C" int jaxseg_onednn_supports_bf16() {
  for (int64_t rank : {2, 3}) {
    Shape s{rank, 1, 16, 16, {8, 8, 8}, {3, 3, 3}, memory::data_type::bf16};
    for (Pass pass : {Pass::kForward, Pass::kBackwardData, Pass::kBackwardWeights}) {
      try {
        MakeKernel(pass, s);
      } catch (const std::exception&) {
        return 0;
      }
    }
  }
  return 1;
}

#define JAXSEG_CONV_HANDLERS(SUFFIX, TYPE)                                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                      \
      jaxseg_conv_forward_##SUFFIX, Forward<TYPE>,                                    \
      ffi::Ffi::Bind().Arg<ffi::Buffer<TYPE>>().Arg<ffi::Buffer<TYPE>>()               \
          .Ret<ffi::Buffer<TYPE>>());                                                 \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                      \
      jaxseg_conv_backward_data_##SUFFIX, BackwardData<TYPE>,                         \
      ffi::Ffi::Bind().Arg<ffi::Buffer<TYPE>>().Arg<ffi::Buffer<TYPE>>()               \
          .Ret<ffi::Buffer<TYPE>>());                                                 \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                      \
      jaxseg_conv_backward_weights_##SUFFIX, BackwardWeights<TYPE>,                   \
      ffi::Ffi::Bind().Arg<ffi::Buffer<TYPE>>().Arg<ffi::Buffer<TYPE>>()               \
          .Ret<ffi::Buffer<TYPE>>());

JAXSEG_CONV_HANDLERS(f32, ffi::DataType::F32)
JAXSEG_CONV_HANDLERS(bf16, ffi::DataType::BF16)
