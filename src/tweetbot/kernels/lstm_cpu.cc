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
// The matmuls are oneDNN's (f32, or bf16 inputs summed in f32, with AMX where the CPU has it); the gate
// arithmetic is plain loops that the compiler vectorizes (libmvec's expf and tanhf). The forward keeps the
// activated gates and tanh(c) for the backward, so it computes no transcendental.
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

  memory Pack(const void* b, dnnl::stream& stream) const {
    memory plain(b_plain, Engine(), const_cast<void*>(b)), packed(pd.weights_desc(), Engine());
    dnnl::reorder(plain, packed).execute(stream, plain, packed);
    return packed;
  }

  void Run(dnnl::stream& stream, const void* a, const memory& b, void* c, const float* bias = nullptr) const {
    thread_local std::vector<char> scratch;  // each thread's own, kept from call to call
    if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(pd.src_desc(), Engine(), const_cast<void*>(a))},
        {DNNL_ARG_WEIGHTS, b},
        {DNNL_ARG_DST, memory(pd.dst_desc(), Engine(), c)},
        {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), Engine(), scratch.data())}};
    if (bias) args[DNNL_ARG_BIAS] = memory(pd.bias_desc(), Engine(), const_cast<float*>(bias));
    primitive.execute(stream, args);
  }
  void Run(dnnl::stream& stream, const void* a, const void* b, void* c, const float* bias = nullptr) const {
    Run(stream, a, memory(pd.weights_desc(), Engine(), const_cast<void*>(b)), c, bias);
  }
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

// bf16 <-> f32: bf16 is the top half of an f32; rounding to nearest even, as XLA's convert does.
inline float Widen(bf16 v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
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

inline float Sigmoid(float z) { return 1.f / (1.f + std::exp(-z)); }

// One row of a forward step: z (the 4H pre-activations, replaced by the activated gates i, f, g, o), c_t from
// c_{t-1}, tanh(c_t), h_t.
template <typename E>
void GatesForward(int64_t H, float* __restrict z, const float* __restrict c_prev, float* __restrict c,
                  float* __restrict tanh_c, E* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    float i = Sigmoid(z[j]), f = Sigmoid(z[H + j]), g = std::tanh(z[2 * H + j]), o = Sigmoid(z[3 * H + j]);
    float cj = f * c_prev[j] + i * g, tj = std::tanh(cj);
    z[j] = i;
    z[H + j] = f;
    z[2 * H + j] = g;
    z[3 * H + j] = o;
    c[j] = cj;
    tanh_c[j] = tj;
    h[j] = Store<E>(o * tj);
  }
}

// One row of a backward step: dz (4H) from the gates and the gradients flowing in; dc becomes what flows into
// step t - 1, and db sums dz.
template <typename E>
void GatesBackward(int64_t H, const float* __restrict gate, const float* __restrict c_before,
                   const float* __restrict tanh_c, const float* __restrict d_out, float* __restrict dc,
                   const float* __restrict dh, E* __restrict dz, float* __restrict db) {
  for (int64_t j = 0; j < H; ++j) {
    float i = gate[j], f = gate[H + j], g = gate[2 * H + j], o = gate[3 * H + j], tc = tanh_c[j];
    float dhj = d_out[j] + dh[j];
    float dcj = dc[j] + dhj * o * (1.f - tc * tc);
    float vi = dcj * g * i * (1.f - i), vf = dcj * c_before[j] * f * (1.f - f);
    float vg = dcj * i * (1.f - g * g), vo = dhj * tc * o * (1.f - o);
    db[j] += vi;
    db[H + j] += vf;
    db[2 * H + j] += vg;
    db[3 * H + j] += vo;
    dc[j] = dcj * f;
    dz[j] = Store<E>(vi);
    dz[H + j] = Store<E>(vf);
    dz[2 * H + j] = Store<E>(vg);
    dz[3 * H + j] = Store<E>(vo);
  }
}

// The threads' shares of the batch: rows [Begin(k), Begin(k + 1)) for thread k, at least 8 rows each (fewer rows
// than that are not worth a thread).
struct Rows {
  int64_t batch;
  int threads;
  explicit Rows(int64_t batch) : batch(batch), threads(int(std::clamp<int64_t>(batch / 8, 1, omp_get_max_threads()))) {}
  int64_t Begin(int k) const { return batch * k / threads; }
};

// The workspace the forward leaves for the backward, all f32: the activated gates [T, B, 4H], c [T, B, H] and
// tanh(c) [T, B, H].
int64_t WorkspaceFloats(int64_t T, int64_t B, int64_t H) { return T * B * 6 * H; }

template <typename E>  // the matmul input type: float, or bf16
void ForwardRows(int64_t T, int64_t B, int64_t H, int64_t r0, int64_t r1, const MatMul& step, const memory& w_h,
                 const E* h0, const float* c0, float* gates, float* cs, float* tanh_cs, E* hs, dnnl::stream& stream) {
  const int64_t G = 4 * H, rows = r1 - r0;
  for (int64_t t = 0; t < T; ++t) {
    float* z = gates + (t * B + r0) * G;
    const E* h_prev = t ? hs + ((t - 1) * B + r0) * H : h0 + r0 * H;
    step.Run(stream, h_prev, w_h, z);  // z += h_prev W_h
    const float* c_prev = t ? cs + ((t - 1) * B + r0) * H : c0 + r0 * H;
    float* c = cs + (t * B + r0) * H;
    float* tanh_c = tanh_cs + (t * B + r0) * H;
    E* h = hs + (t * B + r0) * H;
    for (int64_t r = 0; r < rows; ++r) {
      GatesForward(H, z + r * G, c_prev + r * H, c + r * H, tanh_c + r * H, h + r * H);
    }
  }
}

template <typename E>
void BackwardRows(int64_t T, int64_t B, int64_t H, int64_t r0, int64_t r1, const MatMul& step, const memory& w_h_t,
                  const float* c0, const float* gates, const float* cs, const float* tanh_cs, const float* d_hs,
                  float* dc, float* dh, E* dz_all, float* db, dnnl::stream& stream) {
  const int64_t G = 4 * H, rows = r1 - r0;
  std::fill(db, db + G, 0.f);
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* gate = gates + (t * B + r0) * G;
    const float* c_before = t ? cs + ((t - 1) * B + r0) * H : c0 + r0 * H;
    const float* tanh_c = tanh_cs + (t * B + r0) * H;
    const float* d_out = d_hs + (t * B + r0) * H;
    E* dz = dz_all + (t * B + r0) * G;
    for (int64_t r = 0; r < rows; ++r) {
      GatesBackward(H, gate + r * G, c_before + r * H, tanh_c + r * H, d_out + r * H, dc + r * H, dh + r * H,
                    dz + r * G, db);
    }
    step.Run(stream, dz, w_h_t, dh);  // dh = dz W_hᵀ, what flows into step t - 1
  }
}

Type TypeOf(const ffi::AnyBuffer& buffer) {
  return buffer.element_type() == ffi::DataType::BF16 ? Type::bf16 : Type::f32;
}

ffi::Error Forward(Any x, Any w_x, Any w_h, F32 b, F32 c0, Any h0, AnyOut hs, Out c_last, AnyOut h_last,
                   ffi::ResultBuffer<ffi::U8> workspace) {
  auto dims = x.dimensions();
  const int64_t T = dims[0], B = dims[1], I = dims[2], H = h0.dimensions()[1], G = 4 * H;
  const Type type = TypeOf(x);
  const size_t e = type == Type::bf16 ? 2 : 4;
  if (int64_t(workspace->size_bytes()) != 4 * WorkspaceFloats(T, B, H)) {
    return ffi::Error::InvalidArgument("workspace size");
  }
  float* gates = reinterpret_cast<float*>(workspace->untyped_data());
  float *cs = gates + T * B * G, *tanh_cs = cs + T * B * H;
  try {
    dnnl::stream stream(Engine());
    GetMatMul(T * B, I, G, type, false, false, true, false, false)
        .Run(stream, x.untyped_data(), w_x.untyped_data(), gates, b.typed_data());  // Z = X W_x + b
    Rows rows(B);
    const MatMul& probe = GetMatMul(rows.Begin(1) - rows.Begin(0), H, G, type, false, false, false, true, true);
    memory w_h_packed = probe.Pack(w_h.untyped_data(), stream);
    std::string failure;
#pragma omp parallel num_threads(rows.threads)
    {
      int k = omp_get_thread_num();
      int64_t r0 = rows.Begin(k), r1 = rows.Begin(k + 1);
      try {
        const MatMul& step = GetMatMul(r1 - r0, H, G, type, false, false, false, true, true);
        dnnl::stream own(Engine());
        const memory& w = step.pd.weights_desc() == probe.pd.weights_desc() ? w_h_packed : step.Pack(w_h.untyped_data(), own);
        if (type == Type::bf16) {
          ForwardRows<bf16>(T, B, H, r0, r1, step, w, static_cast<const bf16*>(h0.untyped_data()),
                            c0.typed_data(), gates, cs, tanh_cs, static_cast<bf16*>(hs->untyped_data()), own);
        } else {
          ForwardRows<float>(T, B, H, r0, r1, step, w, static_cast<const float*>(h0.untyped_data()),
                             c0.typed_data(), gates, cs, tanh_cs, static_cast<float*>(hs->untyped_data()), own);
        }
        own.wait();
      } catch (const std::exception& error) {
#pragma omp critical
        failure = error.what();
      }
    }
    if (!failure.empty()) throw std::runtime_error(failure);
    std::memcpy(c_last->typed_data(), cs + (T - 1) * B * H, B * H * 4);
    std::memcpy(h_last->untyped_data(), static_cast<char*>(hs->untyped_data()) + (T - 1) * B * H * e, B * H * e);
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("LSTM forward: ") + error.what());
  }
  return ffi::Error::Success();
}

ffi::Error Backward(Any x, Any w_x, Any w_h, F32 b, F32 c0, Any h0, Any hs, F32 c_last, Any h_last,
                    ffi::Buffer<ffi::U8> workspace, F32 d_hs, F32 d_c_last, F32 d_h_last, Out dx, Out dw_x,
                    Out dw_h, Out db, Out dc0, Out dh0) {
  auto dims = x.dimensions();
  const int64_t T = dims[0], B = dims[1], I = dims[2], H = h0.dimensions()[1], G = 4 * H;
  const Type type = TypeOf(x);
  const size_t e = type == Type::bf16 ? 2 : 4;
  const float* gates = reinterpret_cast<const float*>(workspace.untyped_data());
  const float *cs = gates + T * B * G, *tanh_cs = cs + T * B * H;
  try {
    dnnl::stream stream(Engine());
    std::vector<char> dz_bytes(T * B * G * e);
    void* dz = dz_bytes.data();
    std::memcpy(dc0->typed_data(), d_c_last.typed_data(), B * H * 4);  // the carries flowing back, in place
    std::memcpy(dh0->typed_data(), d_h_last.typed_data(), B * H * 4);
    Rows rows(B);
    std::vector<float> db_parts(rows.threads * G);
    const MatMul& probe = GetMatMul(rows.Begin(1) - rows.Begin(0), G, H, type, false, true, false, false, true);
    memory w_h_t = probe.Pack(w_h.untyped_data(), stream);
    std::string failure;
#pragma omp parallel num_threads(rows.threads)
    {
      int k = omp_get_thread_num();
      int64_t r0 = rows.Begin(k), r1 = rows.Begin(k + 1);
      try {
        const MatMul& step = GetMatMul(r1 - r0, G, H, type, false, true, false, false, true);
        dnnl::stream own(Engine());
        const memory& w = step.pd.weights_desc() == probe.pd.weights_desc() ? w_h_t : step.Pack(w_h.untyped_data(), own);
        float *dc = dc0->typed_data() + r0 * H, *dh = dh0->typed_data() + r0 * H, *dbk = db_parts.data() + k * G;
        if (type == Type::bf16) {
          BackwardRows<bf16>(T, B, H, r0, r1, step, w, c0.typed_data(), gates, cs, tanh_cs, d_hs.typed_data(), dc,
                             dh, static_cast<bf16*>(dz), dbk, own);
        } else {
          BackwardRows<float>(T, B, H, r0, r1, step, w, c0.typed_data(), gates, cs, tanh_cs, d_hs.typed_data(), dc,
                              dh, static_cast<float*>(dz), dbk, own);
        }
        own.wait();
      } catch (const std::exception& error) {
#pragma omp critical
        failure = error.what();
      }
    }
    if (!failure.empty()) throw std::runtime_error(failure);
    float* bias_grad = db->typed_data();
    std::fill(bias_grad, bias_grad + G, 0.f);
    for (int k = 0; k < rows.threads; ++k) {
      for (int64_t j = 0; j < G; ++j) bias_grad[j] += db_parts[k * G + j];
    }
    // dW_h = [h0; hs[:-1]]ᵀ dZ: the first step's term, then the rest added.
    GetMatMul(H, B, G, type, true, false, false, false, false).Run(stream, h0.untyped_data(), dz, dw_h->typed_data());
    if (T > 1) {
      GetMatMul(H, (T - 1) * B, G, type, true, false, false, true, false)
          .Run(stream, hs.untyped_data(), static_cast<char*>(dz) + B * G * e, dw_h->typed_data());
    }
    GetMatMul(I, T * B, G, type, true, false, false, false, false).Run(stream, x.untyped_data(), dz, dw_x->typed_data());
    GetMatMul(T * B, G, I, type, false, true, false, false, false).Run(stream, dz, w_x.untyped_data(), dx->typed_data());
    stream.wait();
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
                                  .Ret<F32>());  // dh0

// The workspace the forward call needs for this shape, in bytes; -1 where oneDNN has only its reference matmul
// for this type on this CPU (bf16 without AVX-512: a Zen 3 EPYC, say), which the pure-JAX scan outruns.
extern "C" int64_t tweetbot_lstm_workspace_bytes(int64_t T, int64_t B, int64_t I, int64_t H, int bf16) {
  try {
    const MatMul& step = GetMatMul(B, H, 4 * H, bf16 ? Type::bf16 : Type::f32, false, false, false, true, true);
    if (std::string(step.pd.impl_info_str()).rfind("ref", 0) == 0) return -1;
    return 4 * WorkspaceFloats(T, B, H);
  } catch (const std::exception&) {
    return -1;
  }
}
