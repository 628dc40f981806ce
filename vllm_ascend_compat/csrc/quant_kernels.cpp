// CPU kernels of the int8 ops behind the "ascend" quantization method (msModelSlim's
// W8A16, W8A8 and W8A8_DYNAMIC linear layers). The schemas are declared in
// vllm_ascend_compat/ops.py; npu_kernels.cpp hands the same ops to torch_npu.
//
// Rounding is to nearest, ties to even (std::nearbyint in the default rounding mode,
// as torch.round), then saturation to [-128, 127].

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

namespace {

// Output channels per GEMM: a [64, in] dequantized block stays in cache for small batches.
constexpr int64_t kChannels = 64;
// Rows per parallel task of the element-wise quantization kernels.
constexpr int64_t kRows = 16;

int8_t saturate(float value) {
  return static_cast<int8_t>(std::min(127.0f, std::max(-128.0f, std::nearbyint(value))));
}

void check_rows(const char* op, const at::Tensor& out, const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 2, op, ": input must be [tokens, in], got ", input.sizes());
  TORCH_CHECK(out.scalar_type() == at::kChar && out.sizes() == input.sizes() &&
                  out.is_contiguous(),
              op, ": out must be a contiguous int8 tensor of the input's shape");
}

// W8A16: out = input @ ((weight + offset) * scale)^T + bias; int8 weight [out, in], one
// scale (and offset) per output channel. The output channels are split across threads in
// blocks; each block is dequantized into the activation dtype and multiplied in one GEMM,
// so no full-precision copy of the weight is ever held.
void int8_weight_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& scale, const std::optional<at::Tensor>& offset,
                        const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.dim() == 2,
              "int8_weight_linear: weight must be int8 [out, in]");
  TORCH_CHECK(input.dim() == 2 && input.size(1) == weight.size(1),
              "int8_weight_linear: input must be [tokens, in]");
  const int64_t channels = weight.size(0);
  TORCH_CHECK(scale.numel() == channels, "int8_weight_linear: one scale per output channel");
  TORCH_CHECK(!offset || offset->numel() == channels,
              "int8_weight_linear: one offset per output channel");
  TORCH_CHECK(out.scalar_type() == input.scalar_type() && out.dim() == 2 &&
                  out.size(0) == input.size(0) && out.size(1) == channels,
              "int8_weight_linear: out must be [tokens, out] in the input's dtype");
  const auto scales = scale.to(at::kFloat).reshape({channels, 1});
  const auto offsets =
      offset ? std::optional<at::Tensor>(offset->to(at::kFloat).reshape({channels, 1}))
             : std::nullopt;
  const auto dtype = input.scalar_type();
  // The caller's inference mode (vLLM's) is thread-local: the worker threads need it to
  // write into an output tensor created under it.
  const at::ThreadLocalState caller;
  at::parallel_for(0, channels, kChannels, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(caller);
    for (int64_t start = begin; start < end; start += kChannels) {
      const int64_t rows = std::min(kChannels, end - start);
      auto dequantized = weight.narrow(0, start, rows).to(at::kFloat);
      if (offsets) dequantized.add_(offsets->narrow(0, start, rows));
      dequantized.mul_(scales.narrow(0, start, rows));
      auto target = out.narrow(1, start, rows);
      at::mm_out(target, input, dequantized.to(dtype).t());
      if (bias) target.add_(bias->narrow(0, start, rows));
    }
  });
}

// Static activation quantization (W8A8): out = sat(round(input * scale + offset)), scale
// and offset broadcast along the input's last dimension (size in or 1): the scale is the
// reciprocal of the checkpoint's input_scale, as npu_quantize takes it with div_mode off.
void quantize_int8(at::Tensor& out, const at::Tensor& input, const at::Tensor& scale,
                   const at::Tensor& offset) {
  check_rows("quantize_int8", out, input);
  const int64_t rows = input.size(0), cols = input.size(1);
  for (const auto* t : {&scale, &offset})
    TORCH_CHECK(t->dim() == 1 && (t->numel() == cols || t->numel() == 1),
                "quantize_int8: scale and offset must be 1-D of size ", cols, " or 1");
  const auto s = scale.to(at::kFloat).expand({cols}).contiguous();
  const auto o = offset.to(at::kFloat).expand({cols}).contiguous();
  const float* sp = s.data_ptr<float>();
  const float* op = o.data_ptr<float>();
  int8_t* dst = out.data_ptr<int8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "quantize_int8", [&] {
    const auto x = input.accessor<scalar_t, 2>();
    at::parallel_for(0, rows, kRows, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t c = 0; c < cols; ++c)
          dst[r * cols + c] = saturate(static_cast<float>(x[r][c]) * sp[c] + op[c]);
    });
  });
}

// Per-token dynamic symmetric quantization (W8A8_DYNAMIC): scale[r] = max|input[r]| / 127
// in float32, out[r] = round(input[r] / scale[r]). An all-zero row gets scale 0 and zeros.
void dynamic_quant_int8(at::Tensor& out, at::Tensor& scale, const at::Tensor& input) {
  check_rows("dynamic_quant_int8", out, input);
  const int64_t rows = input.size(0), cols = input.size(1);
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.dim() == 1 && scale.numel() == rows &&
                  scale.is_contiguous(),
              "dynamic_quant_int8: scale must be a contiguous float32 [tokens]");
  float* scales = scale.data_ptr<float>();
  int8_t* dst = out.data_ptr<int8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "dynamic_quant_int8", [&] {
    const auto x = input.accessor<scalar_t, 2>();
    at::parallel_for(0, rows, kRows, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float peak = 0.0f;
        for (int64_t c = 0; c < cols; ++c)
          peak = std::max(peak, std::abs(static_cast<float>(x[r][c])));
        const float row_scale = peak / 127.0f;
        scales[r] = row_scale;
        for (int64_t c = 0; c < cols; ++c)
          dst[r * cols + c] =
              row_scale > 0.0f ? saturate(static_cast<float>(x[r][c]) / row_scale) : 0;
      }
    });
  });
}

// W8A8 matmul, npu_quant_matmul's arithmetic: acc = input @ weight^T exactly in int32 (int8
// weight [out, in]); an int32 bias (W8A8's quant_bias) is added to acc, then
// out = acc * deq_scale[n] (* pertoken_scale[m]), then a float bias is added.
void int8_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                 const at::Tensor& deq_scale, const std::optional<at::Tensor>& pertoken_scale,
                 const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.scalar_type() == at::kChar && input.dim() == 2,
              "int8_linear: input must be int8 [tokens, in]");
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.dim() == 2 &&
                  weight.size(1) == input.size(1),
              "int8_linear: weight must be int8 [out, in] with the input's in");
  const int64_t tokens = input.size(0), channels = weight.size(0);
  TORCH_CHECK(deq_scale.numel() == channels || deq_scale.numel() == 1,
              "int8_linear: deq_scale must have one value per output channel (or one)");
  TORCH_CHECK(!pertoken_scale || pertoken_scale->numel() == tokens,
              "int8_linear: pertoken_scale must have one value per token");
  TORCH_CHECK(!bias || bias->numel() == channels, "int8_linear: one bias per output channel");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == tokens && out.size(1) == channels &&
                  at::isFloatingType(out.scalar_type()),
              "int8_linear: out must be float [tokens, out]");
  auto acc = at::_int_mm(input, weight.t());
  const bool int_bias = bias && bias->scalar_type() == at::kInt;
  if (int_bias) acc.add_(bias->reshape({1, channels}));
  auto result = acc.to(at::kFloat).mul_(deq_scale.to(at::kFloat).reshape({1, -1}));
  if (pertoken_scale) result.mul_(pertoken_scale->to(at::kFloat).reshape({tokens, 1}));
  if (bias && !int_bias) result.add_(bias->to(at::kFloat).reshape({1, channels}));
  out.copy_(result);
}

}  // namespace

TORCH_LIBRARY_IMPL(_C_ascend_compat, CPU, m) {
  m.impl("int8_weight_linear", &int8_weight_linear);
  m.impl("quantize_int8", &quantize_int8);
  m.impl("dynamic_quant_int8", &dynamic_quant_int8);
  m.impl("int8_linear", &int8_linear);
}
