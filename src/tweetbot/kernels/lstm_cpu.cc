// One LSTM layer, forward (training) and backward, for the CPU, as XLA FFI handlers.
//
// Why not oneDNN's LSTM primitive (what PyTorch's nn.LSTM runs): it splits every time step's small matmul
// between the threads, so each of the T steps ends at a barrier where a thread waits for the slowest, which on a
// 2-core VM with stolen CPU time costs more than the arithmetic. The rows of a batch never meet in the
// recurrence, so here each thread takes its own rows through all T steps, and the threads meet twice a call:
//   forward:  Z = X W_x + b, one big matmul on all threads; then each thread, for its rows, step by step:
//             Z_t += h_{t-1} W_h, the gates, c_t, h_t.
//   backward: each thread, for its rows, from the last step back: dZ_t from the gates, dh_{t-1} = dZ_t W_hᵀ;
//             then dW_h = H_prevᵀ dZ, dW_x = Xᵀ dZ, dX = dZ W_xᵀ, one big matmul each on all threads.
// The first layer has entries of its own (ProjectedForward, ProjectedBackward): its caller makes Z from the
// embedding tables, and takes dZ back in place of dX and dW_x.
// The matmuls are oneDNN's (f32, or bf16 inputs summed in f32, with AMX where the CPU has it); the gate
// arithmetic is plain loops that the compiler vectorizes (Tanh below). The forward keeps the activated gates and
// tanh(c) for the backward, so the backward computes no tanh.
// Layouts are tweetbot's: x [T, B, I], w_x [I, 4H], w_h [H, 4H] (gates i, f, g, o), b [4H], c and h [B, H],
// hs [T, B, H]. Built by `make kernels` (part of `make install`); loaded by tweetbot/kernels/__init__.py.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Type = memory::data_type;
using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;
using Any = ffi::AnyBuffer;  // f32 or bf16: x, the weights and h (what the matmuls read)
using AnyOut = ffi::Result<ffi::AnyBuffer>;
using bf16 = uint16_t;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A matrix operand: dims {rows, cols}, row-major, or its transpose read in place.
memory::desc Matrix(int64_t rows, int64_t cols, Type type, bool transposed = false) {
  if (transposed) return memory::desc({rows, cols}, type, memory::dims{1, rows});
  return memory::desc({rows, cols}, type, memory::dims{cols, 1});
}

// C (M x N, f32) = A (M x K) B (K x N) [+ bias] [+ C]: a oneDNN matmul built once per shape and kept.
// `packed`: B in the layout the matmul reads fastest, made once per call by Pack (the recurrent weights, which
// every time step reads again); else B is read as it is.
struct MatMul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  memory::desc b_plain;
  size_t scratch_bytes;

  MatMul(int64_t M, int64_t K, int64_t N, Type type, bool a_t, bool b_t, bool bias, bool accumulate, bool packed) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // ours, per thread (Run)
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.f);
      attr.set_post_ops(ops);
    }
    b_plain = Matrix(K, N, type, b_t);
    auto b = packed ? memory::desc({K, N}, type, memory::format_tag::any) : b_plain;
    auto c = Matrix(M, N, Type::f32);
    if (bias) {
      pd = dnnl::matmul::primitive_desc(Engine(), Matrix(M, K, type, a_t), b, memory::desc({1, N}, Type::f32,
                                        memory::format_tag::ab), c, attr);
    } else {
      pd = dnnl::matmul::primitive_desc(Engine(), Matrix(M, K, type, a_t), b, c, attr);
    }
    primitive = dnnl::matmul(pd);
    scratch_bytes = pd.scratchpad_desc().get_size();
  }

  // B packed into `buffer` (packed_bytes() of it), or into memory of its own where buffer is null.
  memory Pack(const void* b, dnnl::stream& stream, void* buffer = nullptr) const {
    memory plain(b_plain, Engine(), const_cast<void*>(b));
    memory packed = buffer ? memory(pd.weights_desc(), Engine(), buffer) : memory(pd.weights_desc(), Engine());
    dnnl::reorder(plain, packed).execute(stream, plain, packed);
    return packed;
  }
  int64_t packed_bytes() const { return int64_t(pd.weights_desc().get_size()); }

  void Run(dnnl::stream& stream, const void* a, const void* b, void* c, const float* bias = nullptr) const {
    thread_local std::vector<char> scratch;  // each thread's own, kept from call to call
    if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(pd.src_desc(), Engine(), const_cast<void*>(a))},
        {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), Engine(), const_cast<void*>(b))},
        {DNNL_ARG_DST, memory(pd.dst_desc(), Engine(), c)},
        {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), Engine(), scratch.data())}};
    if (bias) args[DNNL_ARG_BIAS] = memory(pd.bias_desc(), Engine(), const_cast<float*>(bias));
    primitive.execute(stream, args);
  }
};

// One matmul run again and again on other A and C, as a time step's is: its arguments are made once and
// re-pointed at each run, where Run makes oneDNN memory objects and an argument map afresh every time.
class Repeated {
 public:
  Repeated(const MatMul& matmul, const memory& b)
      : matmul_(matmul),
        a_(matmul.pd.src_desc(), Engine(), DNNL_MEMORY_NONE),
        c_(matmul.pd.dst_desc(), Engine(), DNNL_MEMORY_NONE),
        scratch_(matmul.scratch_bytes) {
    args_ = {{DNNL_ARG_SRC, a_},
             {DNNL_ARG_WEIGHTS, b},
             {DNNL_ARG_DST, c_},
             {DNNL_ARG_SCRATCHPAD, memory(matmul.pd.scratchpad_desc(), Engine(), scratch_.data())}};
  }
  void Run(dnnl::stream& stream, const void* a, void* c) {
    a_.set_data_handle(const_cast<void*>(a));
    c_.set_data_handle(c);
    matmul_.primitive.execute(stream, args_);
  }

 private:
  const MatMul& matmul_;
  memory a_, c_;
  std::vector<char> scratch_;
  std::unordered_map<int, memory> args_;
};

using Key = std::tuple<int64_t, int64_t, int64_t, Type, bool, bool, bool, bool, bool>;
const MatMul& GetMatMul(int64_t M, int64_t K, int64_t N, Type type, bool a_t, bool b_t, bool bias, bool accumulate,
                        bool packed) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<MatMul>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& entry = cache[{M, K, N, type, a_t, b_t, bias, accumulate, packed}];
  if (!entry) entry = std::make_unique<MatMul>(M, K, N, type, a_t, b_t, bias, accumulate, packed);
  return *entry;
}

// f32 -> bf16 (the top half of an f32), rounding to nearest even, as XLA's convert does.
inline bf16 Round(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bf16((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

template <typename E>
inline E Store(float v) {
  if constexpr (sizeof(E) == 4) {
    return v;
  } else {
    return Round(v);
  }
}

// tanh as XLA's CPU backend and Eigen compute it: a 13/6 rational approximation on [-7.9, 7.9] (within a few
// float ulps), a dozen multiply-adds and a division that vectorize; sigmoid from it. In place of libmvec's tanhf
// and expf, the h128 layer's forward was 3% faster side by side.
inline float Tanh(float x) {
  x = std::clamp(x, -7.90531110763549805f, 7.90531110763549805f);
  if (std::fabs(x) < 0.0004f) return x;
  float x2 = x * x;
  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  return x * p / q;
}
inline float Sigmoid(float z) { return 0.5f + 0.5f * Tanh(0.5f * z); }

// One row of a forward step: the pre-activations zi, zf, zg, zo (H each, replaced by the activated gates i, f,
// g, o), c_t from c_{t-1}, tanh(c_t), h_t.
template <typename E>
void GatesForward(int64_t H, float* __restrict zi, float* __restrict zf, float* __restrict zg,
                  float* __restrict zo, const float* __restrict c_prev, float* __restrict c,
                  float* __restrict tanh_c, E* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    float i = Sigmoid(zi[j]), f = Sigmoid(zf[j]), g = Tanh(zg[j]), o = Sigmoid(zo[j]);
    float cj = f * c_prev[j] + i * g, tj = Tanh(cj);
    zi[j] = i, zf[j] = f, zg[j] = g, zo[j] = o;
    c[j] = cj;
    tanh_c[j] = tj;
    h[j] = Store<E>(o * tj);
  }
}

// One row of a backward step: dz (its four gates' H each) from the gates and the gradients flowing in; dc
// becomes what flows into step t - 1, and db (four gates' H each) sums dz. With Exact, dz in f32 too (xi..xo):
// bf16 for the matmuls, f32 for a caller that takes the gradient of the input projection itself.
template <typename E, bool Exact>
void GatesBackward(int64_t H, const float* __restrict gi, const float* __restrict gf, const float* __restrict gg,
                   const float* __restrict go, const float* __restrict c_before, const float* __restrict tanh_c,
                   const float* __restrict d_out, float* __restrict dc, const float* __restrict dh,
                   E* __restrict dzi, E* __restrict dzf, E* __restrict dzg, E* __restrict dzo,
                   float* __restrict xi, float* __restrict xf, float* __restrict xg, float* __restrict xo,
                   float* __restrict dbi, float* __restrict dbf, float* __restrict dbg, float* __restrict dbo) {
  for (int64_t j = 0; j < H; ++j) {
    float i = gi[j], f = gf[j], g = gg[j], o = go[j], tc = tanh_c[j];
    float dhj = d_out[j] + dh[j];
    float dcj = dc[j] + dhj * o * (1.f - tc * tc);
    float vi = dcj * g * i * (1.f - i), vf = dcj * c_before[j] * f * (1.f - f);
    float vg = dcj * i * (1.f - g * g), vo = dhj * tc * o * (1.f - o);
    dbi[j] += vi, dbf[j] += vf, dbg[j] += vg, dbo[j] += vo;
    dc[j] = dcj * f;
    dzi[j] = Store<E>(vi), dzf[j] = Store<E>(vf), dzg[j] = Store<E>(vg), dzo[j] = Store<E>(vo);
    if constexpr (Exact) xi[j] = vi, xf[j] = vf, xg[j] = vg, xo[j] = vo;
  }
}

// The threads' shares of the batch: rows [Begin(k), Begin(k + 1)) for thread k, at least 8 rows each (fewer rows
// than that are not worth a thread).
struct Rows {
  int64_t batch;
  int threads;
  explicit Rows(int64_t batch)
      : batch(batch), threads(int(std::clamp<int64_t>(batch / 8, 1, omp_get_max_threads()))) {}
  int64_t Begin(int k) const { return batch * k / threads; }
};

// The step matmuls of thread k's rows: forward z += h W_h, backward dh = dz W_hᵀ (both with W_h packed).
const MatMul& ForwardStep(const Rows& rows, int k, int64_t H, Type type) {
  return GetMatMul(rows.Begin(k + 1) - rows.Begin(k), H, 4 * H, type, false, false, false, true, true);
}
const MatMul& BackwardStep(const Rows& rows, int k, int64_t H, Type type) {
  return GetMatMul(rows.Begin(k + 1) - rows.Begin(k), 4 * H, H, type, false, true, false, false, true);
}

// Runs body(k, r0, r1, stream) on each thread k of `rows`, for its rows [r0, r1), with a stream of its own; an
// exception in any thread is thrown again here, once they have all finished.
template <typename Body>
void OnEachThread(const Rows& rows, Body body) {
  std::string failure;
#pragma omp parallel num_threads(rows.threads)
  {
    int k = omp_get_thread_num();
    try {
      dnnl::stream own(Engine());
      body(k, rows.Begin(k), rows.Begin(k + 1), own);
      own.wait();
    } catch (const std::exception& error) {
#pragma omp critical
      failure = error.what();
    }
  }
  if (!failure.empty()) throw std::runtime_error(failure);
}

// The packed W_h (or W_hᵀ) for `step`: thread 0's, `packed` by `first`, where the two matmuls read the same
// packing; an uneven split may give the other rows' matmul another, and then it packs its own copy.
memory PackedFor(const MatMul& step, const MatMul& first, const memory& packed, const void* w_h,
                 dnnl::stream& stream) {
  return step.pd.weights_desc() == first.pd.weights_desc() ? packed : step.Pack(w_h, stream);
}

// Where things lie in the two byte buffers that XLA allocates for a call (so that the kernel allocates nothing):
//   workspace (the forward's, kept for the backward): the activated gates [T, B, 4H] (but for the projected
//     entries, which keep them in the buffer of the caller's Z), c [T, B, H], tanh(c) [T, B, H], all f32; then
//     W_h packed for the forward's step matmul.
//   scratch (the backward's): dZ [T, B, 4H] in the matmul type; then W_hᵀ packed for the backward's step matmul.
struct Layout {
  int64_t cs, tanh_cs, w_h, workspace;  // byte offsets (the gates at 0) and the size
  int64_t w_h_t, scratch;               // byte offsets (dZ at 0) and the size
  Layout(int64_t T, int64_t B, int64_t H, Type type, bool gates_inside = true) {
    auto aligned = [](int64_t bytes) { return (bytes + 63) / 64 * 64; };
    Rows rows(B);
    cs = gates_inside ? T * B * 4 * H * 4 : 0;
    tanh_cs = cs + T * B * H * 4;
    w_h = aligned(tanh_cs + T * B * H * 4);
    workspace = w_h + ForwardStep(rows, 0, H, type).packed_bytes();
    w_h_t = aligned(T * B * 4 * H * (type == Type::bf16 ? 2 : 4));
    scratch = w_h_t + BackwardStep(rows, 0, H, type).packed_bytes();
  }
};

template <typename E>  // the matmul input type: float, or bf16
void ForwardRows(int64_t T, int64_t B, int64_t H, int64_t r0, int64_t r1, const MatMul& step, const memory& w_h,
                 const E* h0, const float* c0, float* gates, float* cs, float* tanh_cs, E* hs, dnnl::stream& stream) {
  const int64_t G = 4 * H, rows = r1 - r0;
  Repeated z_plus_h_w_h(step, w_h);
  for (int64_t t = 0; t < T; ++t) {
    float* z = gates + (t * B + r0) * G;
    const E* h_prev = t ? hs + ((t - 1) * B + r0) * H : h0 + r0 * H;
    z_plus_h_w_h.Run(stream, h_prev, z);  // z += h_prev W_h
    const float* c_prev = t ? cs + ((t - 1) * B + r0) * H : c0 + r0 * H;
    float* c = cs + (t * B + r0) * H;
    float* tanh_c = tanh_cs + (t * B + r0) * H;
    E* h = hs + (t * B + r0) * H;
    for (int64_t r = 0; r < rows; ++r) {
      float* zr = z + r * G;
      GatesForward(H, zr, zr + H, zr + 2 * H, zr + 3 * H, c_prev + r * H, c + r * H, tanh_c + r * H, h + r * H);
    }
  }
}

template <typename E, bool Exact>
void BackwardRows(int64_t T, int64_t B, int64_t H, int64_t r0, int64_t r1, const MatMul& step, const memory& w_h_t,
                  const float* c0, const float* gates, const float* cs, const float* tanh_cs, const float* d_hs,
                  float* dc, float* dh, E* dz_all, float* exact_all, float* db, dnnl::stream& stream) {
  const int64_t G = 4 * H, rows = r1 - r0;
  std::fill(db, db + G, 0.f);
  Repeated dz_w_h_t(step, w_h_t);
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* gate = gates + (t * B + r0) * G;
    const float* c_before = t ? cs + ((t - 1) * B + r0) * H : c0 + r0 * H;
    const float* tanh_c = tanh_cs + (t * B + r0) * H;
    const float* d_out = d_hs + (t * B + r0) * H;
    E* dz = dz_all + (t * B + r0) * G;
    for (int64_t r = 0; r < rows; ++r) {
      const float* gr = gate + r * G;
      E* dzr = dz + r * G;
      float* xr = Exact ? exact_all + (t * B + r0 + r) * G : nullptr;
      GatesBackward<E, Exact>(H, gr, gr + H, gr + 2 * H, gr + 3 * H, c_before + r * H, tanh_c + r * H, d_out + r * H,
                              dc + r * H, dh + r * H, dzr, dzr + H, dzr + 2 * H, dzr + 3 * H, xr, xr + H, xr + 2 * H,
                              xr + 3 * H, db, db + H, db + 2 * H, db + 3 * H);
    }
    dz_w_h_t.Run(stream, dz, dh);  // dh = dz W_hᵀ, what flows into step t - 1
  }
}

Type TypeOf(const ffi::AnyBuffer& buffer) {
  return buffer.element_type() == ffi::DataType::BF16 ? Type::bf16 : Type::f32;
}

// The forward's time steps, once the workspace's gates hold the input projection Z = X W_x + b: each thread
// takes its rows through all T steps; then the last c and h.
void ForwardSteps(int64_t T, int64_t B, int64_t H, Type type, const Layout& layout, float* gates, char* workspace,
                  const void* w_h, const void* h0, const float* c0, void* hs, float* c_last, void* h_last) {
  const size_t e = type == Type::bf16 ? 2 : 4;
  float* cs = reinterpret_cast<float*>(workspace + layout.cs);
  float* tanh_cs = reinterpret_cast<float*>(workspace + layout.tanh_cs);
  dnnl::stream stream(Engine());
  Rows rows(B);
  const MatMul& first = ForwardStep(rows, 0, H, type);
  memory w_h_packed = first.Pack(w_h, stream, workspace + layout.w_h);
  OnEachThread(rows, [&](int k, int64_t r0, int64_t r1, dnnl::stream& own) {
    const MatMul& step = ForwardStep(rows, k, H, type);
    memory w = PackedFor(step, first, w_h_packed, w_h, own);
    if (type == Type::bf16) {
      ForwardRows<bf16>(T, B, H, r0, r1, step, w, static_cast<const bf16*>(h0), c0, gates, cs, tanh_cs,
                        static_cast<bf16*>(hs), own);
    } else {
      ForwardRows<float>(T, B, H, r0, r1, step, w, static_cast<const float*>(h0), c0, gates, cs, tanh_cs,
                         static_cast<float*>(hs), own);
    }
  });
  std::memcpy(c_last, cs + (T - 1) * B * H, B * H * 4);
  std::memcpy(h_last, static_cast<char*>(hs) + (T - 1) * B * H * e, B * H * e);
}

ffi::Error Forward(Any x, Any w_x, Any w_h, F32 b, F32 c0, Any h0, AnyOut hs, Out c_last, AnyOut h_last,
                   ffi::ResultBuffer<ffi::U8> workspace) {
  auto dims = x.dimensions();
  const int64_t T = dims[0], B = dims[1], I = dims[2], H = h0.dimensions()[1], G = 4 * H;
  const Type type = TypeOf(x);
  try {
    Layout layout(T, B, H, type);
    if (int64_t(workspace->size_bytes()) != layout.workspace) return ffi::Error::InvalidArgument("workspace size");
    char* bytes = static_cast<char*>(workspace->untyped_data());
    dnnl::stream stream(Engine());
    GetMatMul(T * B, I, G, type, false, false, true, false, false)
        .Run(stream, x.untyped_data(), w_x.untyped_data(), bytes, b.typed_data());  // Z = X W_x + b
    stream.wait();
    ForwardSteps(T, B, H, type, layout, reinterpret_cast<float*>(bytes), bytes, w_h.untyped_data(),
                 h0.untyped_data(), c0.typed_data(), hs->untyped_data(), c_last->typed_data(), h_last->untyped_data());
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("LSTM forward: ") + error.what());
  }
  return ffi::Error::Success();
}

// The same over an input projection the caller made (z = X W_x + b, f32 [T, B, 4H]): the first layer, whose
// input is rows of embedding tables, projects the tables and gathers their rows.
// `gates` is z's own buffer (the caller aliases them), where the steps add h W_h and then leave the activated
// gates for the backward.
ffi::Error ProjectedForward(F32 z, Any w_h, F32 c0, Any h0, AnyOut hs, Out c_last, AnyOut h_last, Out gates,
                            ffi::ResultBuffer<ffi::U8> workspace) {
  auto dims = z.dimensions();
  const int64_t T = dims[0], B = dims[1], H = h0.dimensions()[1];
  const Type type = TypeOf(h0);
  try {
    Layout layout(T, B, H, type, false);
    if (int64_t(workspace->size_bytes()) != layout.workspace) return ffi::Error::InvalidArgument("workspace size");
    if (gates->typed_data() != z.typed_data()) std::memcpy(gates->typed_data(), z.typed_data(), z.size_bytes());
    ForwardSteps(T, B, H, type, layout, gates->typed_data(), static_cast<char*>(workspace->untyped_data()),
                 w_h.untyped_data(), h0.untyped_data(), c0.typed_data(), hs->untyped_data(), c_last->typed_data(),
                 h_last->untyped_data());
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("LSTM forward: ") + error.what());
  }
  return ffi::Error::Success();
}

// The backward's time steps, each thread its rows from the last step back: dZ into `dz` (in the matmul type;
// also in f32 into `exact` where given), W_hᵀ packed into `packed`, the carries' gradients in place in dc0 and
// dh0 (which start as the final carries'), db (where given) and dW_h = [h0; hs[:-1]]ᵀ dZ.
void BackwardSteps(int64_t T, int64_t B, int64_t H, Type type, const Layout& layout, const float* gates,
                   const char* workspace, char* dz, char* packed, const void* w_h, const float* c0, const void* h0,
                   const void* hs, const float* d_hs, float* dc0, float* dh0, float* dw_h, float* db,
                   float* exact) {
  const int64_t G = 4 * H;
  const size_t e = type == Type::bf16 ? 2 : 4;
  const float* cs = reinterpret_cast<const float*>(workspace + layout.cs);
  const float* tanh_cs = reinterpret_cast<const float*>(workspace + layout.tanh_cs);
  dnnl::stream stream(Engine());
  Rows rows(B);
  std::vector<float> db_parts(rows.threads * G);
  const MatMul& first = BackwardStep(rows, 0, H, type);
  memory w_h_t = first.Pack(w_h, stream, packed);
  OnEachThread(rows, [&](int k, int64_t r0, int64_t r1, dnnl::stream& own) {
    const MatMul& step = BackwardStep(rows, k, H, type);
    memory w = PackedFor(step, first, w_h_t, w_h, own);
    float *dc = dc0 + r0 * H, *dh = dh0 + r0 * H, *dbk = db_parts.data() + k * G;
    if (type == Type::bf16 && exact) {
      BackwardRows<bf16, true>(T, B, H, r0, r1, step, w, c0, gates, cs, tanh_cs, d_hs, dc, dh,
                               reinterpret_cast<bf16*>(dz), exact, dbk, own);
    } else if (type == Type::bf16) {
      BackwardRows<bf16, false>(T, B, H, r0, r1, step, w, c0, gates, cs, tanh_cs, d_hs, dc, dh,
                                reinterpret_cast<bf16*>(dz), nullptr, dbk, own);
    } else {  // f32: dZ is already exact
      BackwardRows<float, false>(T, B, H, r0, r1, step, w, c0, gates, cs, tanh_cs, d_hs, dc, dh,
                                 reinterpret_cast<float*>(dz), nullptr, dbk, own);
    }
  });
  if (db) {
    std::fill(db, db + G, 0.f);
    for (int k = 0; k < rows.threads; ++k) {
      for (int64_t j = 0; j < G; ++j) db[j] += db_parts[k * G + j];
    }
  }
  // dW_h: the first step's term, then the rest added.
  GetMatMul(H, B, G, type, true, false, false, false, false).Run(stream, h0, dz, dw_h);
  if (T > 1) {
    GetMatMul(H, (T - 1) * B, G, type, true, false, false, true, false).Run(stream, hs, dz + B * G * e, dw_h);
  }
  stream.wait();
}

ffi::Error Backward(Any x, Any w_x, Any w_h, F32 b, F32 c0, Any h0, Any hs, F32 c_last, Any h_last,
                    ffi::Buffer<ffi::U8> workspace, F32 d_hs, F32 d_c_last, F32 d_h_last, Out dx, Out dw_x,
                    Out dw_h, Out db, Out dc0, Out dh0, ffi::ResultBuffer<ffi::U8> scratch) {
  auto dims = x.dimensions();
  const int64_t T = dims[0], B = dims[1], I = dims[2], H = h0.dimensions()[1], G = 4 * H;
  const Type type = TypeOf(x);
  try {
    Layout layout(T, B, H, type);
    if (int64_t(scratch->size_bytes()) != layout.scratch) return ffi::Error::InvalidArgument("scratch size");
    char* dz = static_cast<char*>(scratch->untyped_data());
    std::memcpy(dc0->typed_data(), d_c_last.typed_data(), B * H * 4);  // the carries flowing back, in place
    std::memcpy(dh0->typed_data(), d_h_last.typed_data(), B * H * 4);
    const char* bytes = static_cast<const char*>(workspace.untyped_data());
    BackwardSteps(T, B, H, type, layout, reinterpret_cast<const float*>(bytes), bytes, dz, dz + layout.w_h_t,
                  w_h.untyped_data(), c0.typed_data(), h0.untyped_data(), hs.untyped_data(), d_hs.typed_data(),
                  dc0->typed_data(), dh0->typed_data(), dw_h->typed_data(), db->typed_data(), nullptr);
    dnnl::stream stream(Engine());
    GetMatMul(I, T * B, G, type, true, false, false, false, false)
        .Run(stream, x.untyped_data(), dz, dw_x->typed_data());  // dW_x = Xᵀ dZ
    GetMatMul(T * B, G, I, type, false, true, false, false, false)
        .Run(stream, dz, w_x.untyped_data(), dx->typed_data());  // dX = dZ W_xᵀ
    stream.wait();
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("LSTM backward: ") + error.what());
  }
  return ffi::Error::Success();
}

// The backward of ProjectedForward: dz, the gradient of the input projection (f32 [T, B, 4H]), in place of dx,
// dW_x and db, which the caller derives from it.
ffi::Error ProjectedBackward(Any w_h, F32 c0, Any h0, Any hs, F32 gates, ffi::Buffer<ffi::U8> workspace,
                             F32 d_hs, F32 d_c_last, F32 d_h_last, Out dz, Out dw_h, Out dc0, Out dh0,
                             ffi::ResultBuffer<ffi::U8> scratch) {
  auto dims = hs.dimensions();
  const int64_t T = dims[0], B = dims[1], H = dims[2];
  const Type type = TypeOf(h0);
  try {
    Layout layout(T, B, H, type, false);
    if (int64_t(scratch->size_bytes()) != layout.scratch) return ffi::Error::InvalidArgument("scratch size");
    std::memcpy(dc0->typed_data(), d_c_last.typed_data(), B * H * 4);
    std::memcpy(dh0->typed_data(), d_h_last.typed_data(), B * H * 4);
    char* bytes = static_cast<char*>(scratch->untyped_data());
    bool bf16 = type == Type::bf16;
    // f32: dZ itself is the output (the scratch keeps only the packed W_hᵀ); bf16: dZ rounded for the matmuls
    // in the scratch, and exact in the output.
    char* dz_for_matmuls = bf16 ? bytes : reinterpret_cast<char*>(dz->typed_data());
    BackwardSteps(T, B, H, type, layout, gates.typed_data(), static_cast<const char*>(workspace.untyped_data()),
                  dz_for_matmuls, bytes + layout.w_h_t, w_h.untyped_data(), c0.typed_data(), h0.untyped_data(),
                  hs.untyped_data(), d_hs.typed_data(), dc0->typed_data(), dh0->typed_data(), dw_h->typed_data(),
                  nullptr, bf16 ? dz->typed_data() : nullptr);
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("LSTM backward: ") + error.what());
  }
  return ffi::Error::Success();
}

}  // namespace

// The layer's inputs, the first arguments of both calls: x, w_x, w_h, b, c0, h0.
template <typename Binding>
auto LayerInputs(Binding binding) {
  return std::move(binding).template Arg<Any>().template Arg<Any>().template Arg<Any>()
      .template Arg<F32>().template Arg<F32>().template Arg<Any>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(tweetbot_lstm_forward, Forward,
                              LayerInputs(ffi::Ffi::Bind())
                                  .Ret<Any>()  // hs
                                  .Ret<F32>()  // c_last
                                  .Ret<Any>()  // h_last
                                  .Ret<ffi::Buffer<ffi::U8>>());  // workspace

XLA_FFI_DEFINE_HANDLER_SYMBOL(tweetbot_lstm_backward, Backward,
                              LayerInputs(ffi::Ffi::Bind())
                                  .Arg<Any>()  // hs
                                  .Arg<F32>()  // c_last
                                  .Arg<Any>()  // h_last
                                  .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                  .Arg<F32>()  // d_hs
                                  .Arg<F32>()  // d_c_last
                                  .Arg<F32>()  // d_h_last
                                  .Ret<F32>()  // dx
                                  .Ret<F32>()  // dw_x
                                  .Ret<F32>()  // dw_h
                                  .Ret<F32>()  // db
                                  .Ret<F32>()  // dc0
                                  .Ret<F32>()  // dh0
                                  .Ret<ffi::Buffer<ffi::U8>>());  // scratch

XLA_FFI_DEFINE_HANDLER_SYMBOL(tweetbot_lstm_projected_forward, ProjectedForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // z = x W_x + b
                                  .Arg<Any>()  // w_h
                                  .Arg<F32>()  // c0
                                  .Arg<Any>()  // h0
                                  .Ret<Any>()  // hs
                                  .Ret<F32>()  // c_last
                                  .Ret<Any>()  // h_last
                                  .Ret<F32>()  // gates: z's buffer
                                  .Ret<ffi::Buffer<ffi::U8>>());  // workspace

XLA_FFI_DEFINE_HANDLER_SYMBOL(tweetbot_lstm_projected_backward, ProjectedBackward,
                              ffi::Ffi::Bind()
                                  .Arg<Any>()  // w_h
                                  .Arg<F32>()  // c0
                                  .Arg<Any>()  // h0
                                  .Arg<Any>()  // hs
                                  .Arg<F32>()  // gates
                                  .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                  .Arg<F32>()  // d_hs
                                  .Arg<F32>()  // d_c_last
                                  .Arg<F32>()  // d_h_last
                                  .Ret<F32>()  // dz
                                  .Ret<F32>()  // dw_h
                                  .Ret<F32>()  // dc0
                                  .Ret<F32>()  // dh0
                                  .Ret<ffi::Buffer<ffi::U8>>());  // scratch

// The sizes of the forward's workspace, the backward's scratch and the projected forward's workspace for this
// shape, in bytes (sizes[0..2]);
// false where oneDNN has only its reference matmul for this type on this CPU (bf16 without AVX-512: a Zen 3 EPYC,
// say), which the pure-JAX scan outruns.
extern "C" bool tweetbot_lstm_buffer_bytes(int64_t T, int64_t B, int64_t H, int bf16, int64_t* sizes) {
  try {
    Type type = bf16 ? Type::bf16 : Type::f32;
    if (std::string(ForwardStep(Rows(B), 0, H, type).pd.impl_info_str()).rfind("ref", 0) == 0) return false;
    Layout layout(T, B, H, type);
    sizes[0] = layout.workspace, sizes[1] = layout.scratch, sizes[2] = Layout(T, B, H, type, false).workspace;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}
