// CPU kernel of int8_weight_linear (W8A16): int8 weights [out, in] with one float scale
// per output channel. The output channels are split across threads in blocks; each block
// is dequantized into the activation dtype and multiplied in one GEMM, so no full-precision
// copy of the weight is ever held. The schema is declared in vllm_ascend_compat/ops.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace {

// Output channels per GEMM: a [64, in] dequantized block stays in cache for small batches.
constexpr int64_t kChannels = 64;

void int8_weight_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& scale, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.scalar_type() == at::kChar && weight.dim() == 2,
              "int8_weight_linear: weight must be int8 [out, in]");
  TORCH_CHECK(input.dim() == 2 && input.size(1) == weight.size(1),
              "int8_weight_linear: input must be [tokens, in]");
  const int64_t channels = weight.size(0);
  TORCH_CHECK(scale.numel() == channels, "int8_weight_linear: one scale per output channel");
  TORCH_CHECK(out.scalar_type() == input.scalar_type() && out.dim() == 2 &&
                  out.size(0) == input.size(0) && out.size(1) == channels,
              "int8_weight_linear: out must be [tokens, out] in the input's dtype");
  const auto scales = scale.to(at::kFloat).contiguous().unsqueeze(1);
  const auto dtype = input.scalar_type();
  // The caller's inference mode (vLLM's) is thread-local: the worker threads need it to
  // write into an output tensor created under it.
  const at::ThreadLocalState caller;
  at::parallel_for(0, channels, kChannels, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(caller);
    for (int64_t start = begin; start < end; start += kChannels) {
      const int64_t rows = std::min(kChannels, end - start);
      const auto dequantized =
          weight.narrow(0, start, rows).to(at::kFloat).mul_(scales.narrow(0, start, rows));
      auto target = out.narrow(1, start, rows);
      at::mm_out(target, input, dequantized.to(dtype).t());
      if (bias) target.add_(bias->narrow(0, start, rows));
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(_C_ascend_compat, CPU, m) {
  m.impl("int8_weight_linear", &int8_weight_linear);
}
