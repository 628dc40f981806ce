// PrivateUse1 (Ascend NPU) kernels of the _C_ascend_compat ops. Each hands the work to
// the matching torch_npu op through the dispatcher, found by schema name and called
// with arguments by name, so this file needs no CANN or torch_npu headers.
// tests/test_npu_contract.py checks every call here against torch_npu's schemas.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using Arg = std::pair<const char*, c10::IValue>;

// Call a registered op with named arguments; the rest take their schema defaults.
std::vector<c10::IValue> call_npu(const char* op, std::initializer_list<Arg> named) {
  const std::string full(op);
  const auto split = full.find('.');
  const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow(
      full.substr(0, split).c_str(), split == std::string::npos ? "" : full.substr(split + 1).c_str());
  const auto& arguments = handle.schema().arguments();
  std::vector<c10::IValue> stack;
  for (const auto& argument : arguments) {
    const Arg* given = nullptr;
    for (const auto& arg : named)
      if (argument.name() == arg.first) given = &arg;
    if (given) {
      stack.push_back(given->second);
    } else {
      TORCH_CHECK(argument.default_value().has_value(), "_C_ascend_compat: ", op,
                  " needs argument ", argument.name());
      stack.push_back(*argument.default_value());
    }
  }
  for (const auto& arg : named) {
    bool known = false;
    for (const auto& argument : arguments) known |= argument.name() == arg.first;
    TORCH_CHECK(known, "_C_ascend_compat: ", op, " has no argument ", arg.first);
  }
  handle.callBoxed(stack);
  return stack;
}

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double epsilon) {
  auto result = call_npu("npu::npu_rms_norm", {{"input", input}, {"gamma", weight},
                                               {"epsilon", epsilon}});
  out.copy_(result[0].toTensor());
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  auto result = call_npu("npu::npu_add_rms_norm", {{"x1", input}, {"x2", residual},
                                                   {"gamma", weight}, {"epsilon", epsilon}});
  residual.copy_(result[2].toTensor());
  input.copy_(result[0].toTensor());
}

void rotary_embedding(const at::Tensor& positions, at::Tensor& query, at::Tensor& key,
                      int64_t head_size, const at::Tensor& cos_sin_cache, bool is_neox) {
  call_npu("atb::_npu_rotary_embedding",
           {{"positions", positions}, {"query", query}, {"key", key}, {"head_size", head_size},
            {"cos_sin_cache", cos_sin_cache}, {"is_neox_style", is_neox}});
}

void silu_and_mul(at::Tensor& out, const at::Tensor& input) {
  auto result = call_npu("npu::npu_swiglu", {{"input", input}, {"dim", int64_t(-1)}});
  out.copy_(result[0].toTensor());
}

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  call_npu("atb::_npu_reshape_and_cache",
           {{"key", key}, {"value", value}, {"key_cache", key_cache},
            {"value_cache", value_cache}, {"slot_indices", slot_mapping.to(at::kInt)}});
}

void paged_attention(at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                     const at::Tensor& value_cache, int64_t num_kv_heads, double scale,
                     const at::Tensor& block_tables, const at::Tensor& seq_lens) {
  call_npu("atb::_npu_paged_attention",
           {{"query", query}, {"key_cache", key_cache}, {"value_cache", value_cache},
            {"num_kv_heads", num_kv_heads}, {"num_heads", query.size(1)},
            {"scale_value", scale}, {"block_table", block_tables.to(at::kInt)},
            {"context_lens", seq_lens.to(at::kInt)}, {"out", out}});
}

// torch_npu takes the weight as [in, out] (a transposed view is accepted) and the scale in
// the activation dtype. The bias is added here: torch_npu wants it in float32 for bf16 inputs.
void int8_weight_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& scale, const std::optional<at::Tensor>& bias) {
  auto result = call_npu("npu::npu_weight_quant_batchmatmul",
                         {{"x", input}, {"weight", weight.t()},
                          {"antiquant_scale", scale.to(input.scalar_type())}});
  out.copy_(result[0].toTensor());
  if (bias) out.add_(*bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(_C_ascend_compat, PrivateUse1, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm);
  m.impl("rotary_embedding", &rotary_embedding);
  m.impl("silu_and_mul", &silu_and_mul);
  m.impl("reshape_and_cache", &reshape_and_cache);
  m.impl("paged_attention", &paged_attention);
  m.impl("int8_weight_linear", &int8_weight_linear);
}
