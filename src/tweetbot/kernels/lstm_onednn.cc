// One LSTM layer, forward (training) and backward, through oneDNN's LSTM primitive, as XLA FFI handlers.
//
// The same primitive PyTorch's nn.LSTM runs on a CPU: the input projection of all time steps is one big GEMM,
// each step's recurrent GEMM and gate arithmetic are oneDNN's JIT kernels, and the forward keeps what the
// backward needs in a workspace (an opaque byte buffer that JAX carries from one call to the other).
// Layouts are tweetbot's, so nothing is copied on the way in or out:
//   x [T, B, I] (tnc), w_x [I, 4H] and w_h [H, 4H] (ldigo, gates i, f, g, o), b [4H] (ldgo),
//   c0, h0, cT, hT [B, H] (ldnc), hs [T, B, H] (tnc).
// Primitives are built once per shape and reused. Built by `make kernels` (part of `make install`); loaded with
// ctypes by tweetbot/kernels/__init__.py, which asks tweetbot_lstm_workspace_bytes for the workspace's size.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;
using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;
using Any = ffi::AnyBuffer;  // f32 or bf16: x, the weights and h (what the matmuls read)
using AnyOut = ffi::Result<ffi::AnyBuffer>;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

using Type = memory::data_type;
memory::desc Desc(memory::dims dims, Tag tag, Type type = Type::f32) { return memory::desc(dims, type, tag); }

// Everything the two calls need for one shape (time, batch, input width, hidden width) and data type: f32, or
// bf16 for x, h and the weights (the matmul inputs; oneDNN sums in f32, and the cell state c and the bias stay
// f32), with the gradients in f32.
struct Layer {
  dnnl::lstm_forward::primitive_desc fwd_pd;
  dnnl::lstm_backward::primitive_desc bwd_pd;
  dnnl::lstm_forward fwd;
  dnnl::lstm_backward bwd;
  memory::desc w_x, w_h, dw_x, dw_h;    // ldigo, tweetbot's layout (the gradients in f32)
  memory::desc w_x_fwd, w_h_fwd;        // what the forward primitive wants
  memory::desc w_x_bwd, w_h_bwd;        // what the backward primitive wants
  memory::desc dw_x_bwd, dw_h_bwd;      // the weight gradients it writes, reordered to ldigo if they differ
  memory fwd_scratch, bwd_scratch;
  std::mutex running;                   // one call at a time uses the scratch buffers

  Layer(int64_t T, int64_t B, int64_t I, int64_t H, Type type) {
    auto& e = Engine();
    auto x = Desc({T, B, I}, Tag::tnc, type), hs = Desc({T, B, H}, Tag::tnc, type);
    auto h = Desc({1, 1, B, H}, Tag::ldnc, type), c = Desc({1, 1, B, H}, Tag::ldnc);
    w_x = Desc({1, 1, I, 4, H}, Tag::ldigo, type);
    w_h = Desc({1, 1, H, 4, H}, Tag::ldigo, type);
    dw_x = Desc({1, 1, I, 4, H}, Tag::ldigo);
    dw_h = Desc({1, 1, H, 4, H}, Tag::ldigo);
    auto bias = Desc({1, 1, 4, H}, Tag::ldgo);
    auto dx = Desc({T, B, I}, Tag::tnc), dhs = Desc({T, B, H}, Tag::tnc), dh = Desc({1, 1, B, H}, Tag::ldnc);
    auto direction = dnnl::rnn_direction::unidirectional_left2right;
    // Scratch memory is ours (one buffer per primitive, below), not a library-wide buffer shared across threads.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    // Weights in whatever layout oneDNN computes fastest with (reordered into it per call: it is small).
    auto any_x = Desc({1, 1, I, 4, H}, Tag::any, type), any_h = Desc({1, 1, H, 4, H}, Tag::any, type);
    auto any_dx = Desc({1, 1, I, 4, H}, Tag::any), any_dh = Desc({1, 1, H, 4, H}, Tag::any);
    fwd_pd = dnnl::lstm_forward::primitive_desc(e, dnnl::prop_kind::forward_training, direction, x, h, c, any_x,
                                                any_h, bias, hs, h, c, attr);
    bwd_pd = dnnl::lstm_backward::primitive_desc(e, dnnl::prop_kind::backward, direction, x, h, c, any_x, any_h,
                                                 bias, hs, h, c, dx, dh, c, any_dx, any_dh, bias, dhs, dh, c, fwd_pd,
                                                 attr);
    fwd = dnnl::lstm_forward(fwd_pd);
    bwd = dnnl::lstm_backward(bwd_pd);
    fwd_scratch = memory(fwd_pd.scratchpad_desc(), e);
    bwd_scratch = memory(bwd_pd.scratchpad_desc(), e);
    w_x_fwd = fwd_pd.weights_layer_desc();
    w_h_fwd = fwd_pd.weights_iter_desc();
    w_x_bwd = bwd_pd.weights_layer_desc();
    w_h_bwd = bwd_pd.weights_iter_desc();
    dw_x_bwd = bwd_pd.diff_weights_layer_desc();
    dw_h_bwd = bwd_pd.diff_weights_iter_desc();
  }
  size_t workspace_bytes() const { return fwd_pd.workspace_desc().get_size(); }
};

Layer& GetLayer(int64_t T, int64_t B, int64_t I, int64_t H, Type type) {
  static std::mutex mutex;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, Type>, std::unique_ptr<Layer>> layers;
  std::lock_guard<std::mutex> lock(mutex);
  auto& layer = layers[{T, B, I, H, type}];
  if (!layer) layer = std::make_unique<Layer>(T, B, I, H, type);
  return *layer;
}

Type TypeOf(const ffi::AnyBuffer& buffer) {
  return buffer.element_type() == ffi::DataType::BF16 ? Type::bf16 : Type::f32;
}

memory Wrap(const memory::desc& desc, const void* data) {
  return memory(desc, Engine(), const_cast<void*>(data));
}

// A buffer in the layout `want`: `data` itself when it already is, else a reordered copy.
memory InLayout(const memory::desc& have, const memory::desc& want, const void* data, dnnl::stream& stream) {
  memory source = Wrap(have, data);
  if (have == want) return source;
  memory copy(want, Engine());
  dnnl::reorder(source, copy).execute(stream, source, copy);
  return copy;
}

ffi::Error Forward(Any x, Any w_x, Any w_h, F32 b, F32 c0, Any h0, AnyOut hs, Out c_last, AnyOut h_last,
                   ffi::ResultBuffer<ffi::U8> workspace) {
  auto dims = x.dimensions();
  int64_t T = dims[0], B = dims[1], I = dims[2], H = h0.dimensions()[1];
  try {
    Layer& layer = GetLayer(T, B, I, H, TypeOf(x));
    if (workspace->size_bytes() != layer.workspace_bytes()) return ffi::Error::InvalidArgument("workspace size");
    std::lock_guard<std::mutex> lock(layer.running);
    dnnl::stream stream(Engine());
    auto& pd = layer.fwd_pd;
    memory w_x_fwd = InLayout(layer.w_x, layer.w_x_fwd, w_x.untyped_data(), stream);
    memory w_h_fwd = InLayout(layer.w_h, layer.w_h_fwd, w_h.untyped_data(), stream);
    layer.fwd.execute(stream, {{DNNL_ARG_SRC_LAYER, Wrap(pd.src_layer_desc(), x.untyped_data())},
                               {DNNL_ARG_SRC_ITER, Wrap(pd.src_iter_desc(), h0.untyped_data())},
                               {DNNL_ARG_SRC_ITER_C, Wrap(pd.src_iter_c_desc(), c0.untyped_data())},
                               {DNNL_ARG_WEIGHTS_LAYER, w_x_fwd},
                               {DNNL_ARG_WEIGHTS_ITER, w_h_fwd},
                               {DNNL_ARG_BIAS, Wrap(pd.bias_desc(), b.untyped_data())},
                               {DNNL_ARG_DST_LAYER, Wrap(pd.dst_layer_desc(), hs->untyped_data())},
                               {DNNL_ARG_DST_ITER, Wrap(pd.dst_iter_desc(), h_last->untyped_data())},
                               {DNNL_ARG_DST_ITER_C, Wrap(pd.dst_iter_c_desc(), c_last->untyped_data())},
                               {DNNL_ARG_WORKSPACE, Wrap(pd.workspace_desc(), workspace->untyped_data())},
                               {DNNL_ARG_SCRATCHPAD, layer.fwd_scratch}});
    stream.wait();
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("oneDNN LSTM forward: ") + error.what());
  }
  return ffi::Error::Success();
}

ffi::Error Backward(Any x, Any w_x, Any w_h, F32 b, F32 c0, Any h0, Any hs, F32 c_last, Any h_last,
                    ffi::Buffer<ffi::U8> workspace, F32 d_hs, F32 d_c_last, F32 d_h_last, Out dx, Out dw_x,
                    Out dw_h, Out db, Out dc0, Out dh0) {
  auto dims = x.dimensions();
  int64_t T = dims[0], B = dims[1], I = dims[2], H = h0.dimensions()[1];
  try {
    Layer& layer = GetLayer(T, B, I, H, TypeOf(x));
    std::lock_guard<std::mutex> lock(layer.running);
    auto& pd = layer.bwd_pd;
    dnnl::stream stream(Engine());
    memory w_x_bwd = InLayout(layer.w_x, layer.w_x_bwd, w_x.untyped_data(), stream);
    memory w_h_bwd = InLayout(layer.w_h, layer.w_h_bwd, w_h.untyped_data(), stream);
    // The primitive adds into the weight and bias gradients: they start from zero.
    bool dw_x_direct = layer.dw_x_bwd == layer.dw_x, dw_h_direct = layer.dw_h_bwd == layer.dw_h;
    memory dw_x_mem = dw_x_direct ? Wrap(layer.dw_x, dw_x->untyped_data()) : memory(layer.dw_x_bwd, Engine());
    memory dw_h_mem = dw_h_direct ? Wrap(layer.dw_h, dw_h->untyped_data()) : memory(layer.dw_h_bwd, Engine());
    memory db_mem = Wrap(pd.diff_bias_desc(), db->untyped_data());
    for (memory* m : {&dw_x_mem, &dw_h_mem, &db_mem}) {
      std::memset(m->get_data_handle(), 0, m->get_desc().get_size());
    }
    layer.bwd.execute(stream, {{DNNL_ARG_SRC_LAYER, Wrap(pd.src_layer_desc(), x.untyped_data())},
                               {DNNL_ARG_SRC_ITER, Wrap(pd.src_iter_desc(), h0.untyped_data())},
                               {DNNL_ARG_SRC_ITER_C, Wrap(pd.src_iter_c_desc(), c0.untyped_data())},
                               {DNNL_ARG_WEIGHTS_LAYER, w_x_bwd},
                               {DNNL_ARG_WEIGHTS_ITER, w_h_bwd},
                               {DNNL_ARG_BIAS, Wrap(pd.bias_desc(), b.untyped_data())},
                               {DNNL_ARG_DST_LAYER, Wrap(pd.dst_layer_desc(), hs.untyped_data())},
                               {DNNL_ARG_DST_ITER, Wrap(pd.dst_iter_desc(), h_last.untyped_data())},
                               {DNNL_ARG_DST_ITER_C, Wrap(pd.dst_iter_c_desc(), c_last.untyped_data())},
                               {DNNL_ARG_WORKSPACE, Wrap(pd.workspace_desc(), workspace.untyped_data())},
                               {DNNL_ARG_DIFF_DST_LAYER, Wrap(pd.diff_dst_layer_desc(), d_hs.untyped_data())},
                               {DNNL_ARG_DIFF_DST_ITER, Wrap(pd.diff_dst_iter_desc(), d_h_last.untyped_data())},
                               {DNNL_ARG_DIFF_DST_ITER_C, Wrap(pd.diff_dst_iter_c_desc(), d_c_last.untyped_data())},
                               {DNNL_ARG_DIFF_SRC_LAYER, Wrap(pd.diff_src_layer_desc(), dx->untyped_data())},
                               {DNNL_ARG_DIFF_SRC_ITER, Wrap(pd.diff_src_iter_desc(), dh0->untyped_data())},
                               {DNNL_ARG_DIFF_SRC_ITER_C, Wrap(pd.diff_src_iter_c_desc(), dc0->untyped_data())},
                               {DNNL_ARG_DIFF_WEIGHTS_LAYER, dw_x_mem},
                               {DNNL_ARG_DIFF_WEIGHTS_ITER, dw_h_mem},
                               {DNNL_ARG_DIFF_BIAS, db_mem},
                               {DNNL_ARG_SCRATCHPAD, layer.bwd_scratch}});
    if (!dw_x_direct) {
      memory out = Wrap(layer.dw_x, dw_x->untyped_data());
      dnnl::reorder(dw_x_mem, out).execute(stream, dw_x_mem, out);
    }
    if (!dw_h_direct) {
      memory out = Wrap(layer.dw_h, dw_h->untyped_data());
      dnnl::reorder(dw_h_mem, out).execute(stream, dw_h_mem, out);
    }
    stream.wait();
  } catch (const std::exception& error) {
    return ffi::Error::Internal(std::string("oneDNN LSTM backward: ") + error.what());
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

// The workspace the forward call needs for this shape and type, in bytes (-1 and a message on stderr if oneDNN
// refuses).
// bf16: nonzero for bf16 matmul inputs.
extern "C" int64_t tweetbot_lstm_workspace_bytes(int64_t T, int64_t B, int64_t I, int64_t H, int bf16) {
  try {
    return static_cast<int64_t>(GetLayer(T, B, I, H, bf16 ? Type::bf16 : Type::f32).workspace_bytes());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "oneDNN LSTM: %s\n", error.what());
    return -1;
  }
}
