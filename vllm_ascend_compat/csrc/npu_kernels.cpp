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
#include <vector>

namespace {

// A registered op and the binding of its arguments, resolved once: each call site keeps one
// in a function-local static, so the schema lookup and the walk over its arguments happen
// on the first call, not in every layer at every step. Arguments are bound by name; the
// ones not named take their schema defaults.
class NpuCall {
 public:
  NpuCall(const char* op, std::initializer_list<const char*> names)
      : handle_(find(op)), named_(names.size()) {
    const auto& arguments = handle_.schema().arguments();
    for (const auto& argument : arguments) {
      int given = -1;
      int index = 0;
      for (const char* name : names) {
        if (argument.name() == name) given = index;
        ++index;
      }
      TORCH_CHECK(given >= 0 || argument.default_value().has_value(), "_C_ascend_compat: ",
                  op, " needs argument ", argument.name());
      source_.push_back(given);
      defaults_.push_back(given >= 0 ? c10::IValue() : *argument.default_value());
    }
    for (const char* name : names) {
      bool known = false;
      for (const auto& argument : arguments) known |= argument.name() == name;
      TORCH_CHECK(known, "_C_ascend_compat: ", op, " has no argument ", name);
    }
  }

  // The values of the named arguments, in the order of the names; returns the op's outputs.
  std::vector<c10::IValue> operator()(std::initializer_list<c10::IValue> values) const {
    TORCH_INTERNAL_ASSERT(values.size() == named_);
    std::vector<c10::IValue> stack;
    stack.reserve(source_.size());
    for (size_t i = 0; i < source_.size(); ++i)
      stack.push_back(source_[i] < 0 ? defaults_[i] : values.begin()[source_[i]]);
    handle_.callBoxed(stack);
    return stack;
  }

 private:
  static c10::OperatorHandle find(const char* op) {
    const std::string full(op);
    const auto split = full.find('.');
    return c10::Dispatcher::singleton().findSchemaOrThrow(
        full.substr(0, split).c_str(),
        split == std::string::npos ? "" : full.substr(split + 1).c_str());
  }

  c10::OperatorHandle handle_;
  size_t named_;
  std::vector<int> source_;  // per schema argument: its index among the names, or -1
  std::vector<c10::IValue> defaults_;  // per schema argument: its default, when not named
};

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double epsilon) {
  static const NpuCall call_npu("npu::npu_rms_norm", {"input", "gamma", "epsilon"});
  auto result = call_npu({input, weight, epsilon});
  out.copy_(result[0].toTensor());
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  static const NpuCall call_npu("npu::npu_add_rms_norm", {"x1", "x2", "gamma", "epsilon"});
  auto result = call_npu({input, residual, weight, epsilon});
  residual.copy_(result[2].toTensor());
  input.copy_(result[0].toTensor());
}

// ATB rotates contiguous [tokens, heads * width] rows whose heads are as wide as the cos/sin
// cache. vLLM's q and k are column slices of its qkv projection, and with partial rotary
// (rotary_dim < head_size) only the first rotary_dim of each head turn. So the op gets the
// rotated part of each head, copied to a contiguous tensor when it is not one already, with
// head_size = rotary_dim (as vllm-ascend does), and the result is written back into the view.
void rotary_embedding(const at::Tensor& positions, at::Tensor& query, at::Tensor& key,
                      int64_t head_size, const at::Tensor& cos_sin_cache, bool is_neox) {
  static const NpuCall call_npu(
      "atb::_npu_rotary_embedding",
      {"positions", "query", "key", "head_size", "cos_sin_cache", "is_neox_style"});
  const int64_t tokens = positions.numel(), rotary_dim = cos_sin_cache.size(-1);
  const at::Tensor q_rot = query.view({tokens, -1, head_size}).narrow(-1, 0, rotary_dim);
  const at::Tensor k_rot = key.view({tokens, -1, head_size}).narrow(-1, 0, rotary_dim);
  const at::Tensor q = q_rot.contiguous(), k = k_rot.contiguous();
  call_npu({positions, q.view({tokens, -1}), k.view({tokens, -1}), rotary_dim, cos_sin_cache,
            is_neox});
  if (!q.is_same(q_rot)) q_rot.copy_(q);
  if (!k.is_same(k_rot)) k_rot.copy_(k);
}

void silu_and_mul(at::Tensor& out, const at::Tensor& input) {
  static const NpuCall call_npu("npu::npu_swiglu", {"input", "dim"});
  auto result = call_npu({input, int64_t(-1)});
  out.copy_(result[0].toTensor());
}

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  static const NpuCall call_npu(
      "atb::_npu_reshape_and_cache",
      {"key", "value", "key_cache", "value_cache", "slot_indices"});
  call_npu({key, value, key_cache, value_cache, slot_mapping.to(at::kInt)});
}

void paged_attention(at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                     const at::Tensor& value_cache, int64_t num_kv_heads, double scale,
                     const at::Tensor& block_tables, const at::Tensor& seq_lens) {
  static const NpuCall call_npu(
      "atb::_npu_paged_attention",
      {"query", "key_cache", "value_cache", "num_kv_heads", "num_heads", "scale_value",
       "block_table", "context_lens", "out"});
  call_npu({query, key_cache, value_cache, num_kv_heads, query.size(1), scale,
            block_tables.to(at::kInt), seq_lens.to(at::kInt), out});
}

// MLA's latent cache [num_blocks, block_size, kv_lora_rank + rope_dim] is, to ATB, a key
// cache of one head, as vllm-ascend uses it: the single-input cache write stores a token's
// row (kv_c, then k_pe), and decode attention takes each row whole as the key and its first
// kv_lora_rank columns as the value (mlaVHeadSize). Only the first slot_mapping.numel()
// tokens have slots. ATB writes only into contiguous outputs: a cache whose blocks are
// strided (a view of a larger allocation) goes through a contiguous copy of the whole
// cache, and a strided out through one of out.
void concat_and_cache_mla(const at::Tensor& kv_c, const at::Tensor& k_pe, at::Tensor& kv_cache,
                          const at::Tensor& slot_mapping) {
  static const NpuCall call_npu("atb::_npu_reshape_and_cache_siso",
                                {"key", "key_cache", "slot_indices"});
  const int64_t tokens = slot_mapping.numel();
  const at::Tensor rows =
      at::cat({kv_c.narrow(0, 0, tokens), k_pe.narrow(0, 0, tokens).flatten(1)}, 1);
  const at::Tensor cache = kv_cache.contiguous();
  call_npu({rows.unsqueeze(1), cache.unsqueeze(2), slot_mapping.to(at::kInt)});
  if (!cache.is_same(kv_cache)) kv_cache.copy_(cache);
}

void paged_attention_mla(at::Tensor& out, const at::Tensor& query, const at::Tensor& kv_cache,
                         int64_t kv_lora_rank, double scale, const at::Tensor& block_tables,
                         const at::Tensor& seq_lens) {
  static const NpuCall call_npu(
      "atb::_npu_paged_attention_mla",
      {"query", "key_cache", "num_kv_heads", "num_heads", "scale_value", "block_table",
       "context_lens", "mla_vheadsize", "out"});
  const at::Tensor result = out.contiguous();
  call_npu({query, kv_cache.unsqueeze(2), int64_t(1), query.size(1), scale,
            block_tables.to(at::kInt), seq_lens.to(at::kInt), kv_lora_rank, result});
  if (!result.is_same(out)) out.copy_(result);
}

// MoE experts over the rows sorted by expert, as vllm-ascend runs them: one x, one weight
// (torch_npu's [E, in, out]: the plugin's [E, out, in] passed transposed, a layout the op
// reads), split along M (group_type 0) by cumulative ends (group_list_type 0), one output
// (split_item 2). torch_npu requires the last end to be x's row count, and with fewer rows
// grouped vllm-ascend finds random values in the rest: the last group is stretched to every
// row, and only the rows before group_ends[-1] are taken into out, selected on the device,
// so the rows past it keep their values and the host never waits for the ends.
void grouped_matmul(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor& group_ends) {
  static const NpuCall call_npu(
      "npu::npu_grouped_matmul",
      {"x", "weight", "group_list", "split_item", "group_type", "group_list_type"});
  const int64_t rows = input.size(0);
  const at::Tensor group_list = group_ends.clone();
  group_list.narrow(0, group_list.size(0) - 1, 1).fill_(rows);
  auto result = call_npu({std::vector<at::Tensor>{input},
                          std::vector<at::Tensor>{weight.transpose(1, 2)}, group_list,
                          int64_t(2), int64_t(0), int64_t(0)});
  const at::Tensor grouped = at::arange(rows, group_ends.options()) < group_ends[-1];
  out.copy_(at::where(grouped.unsqueeze(1), result[0].toTensorVector()[0], out));
}

// The int8 ops of the "ascend" quantization method, as vllm-ascend calls torch_npu for
// each msModelSlim scheme. torch_npu takes weights as [in, out]; the plugin keeps them
// [out, in] and passes the transposed view. Scales and offsets come prepared by the
// layer (quantization.py) in the dtypes torch_npu documents, so nothing is converted here.

// W8A16. The bias is added here: torch_npu wants it in float32 for bf16 inputs.
void int8_weight_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& scale, const std::optional<at::Tensor>& offset,
                        const std::optional<at::Tensor>& bias) {
  static const NpuCall call_npu("npu::npu_weight_quant_batchmatmul",
                                {"x", "weight", "antiquant_scale", "antiquant_offset"});
  auto result = call_npu({input, weight.t(), scale, offset});
  out.copy_(result[0].toTensor());
  if (bias) out.add_(*bias);
}

// W8A8 activations: div_mode off multiplies by the reciprocal scale, then adds the offset.
void quantize_int8(at::Tensor& out, const at::Tensor& input, const at::Tensor& scale,
                   const at::Tensor& offset) {
  static const NpuCall call_npu("npu::npu_quantize",
                                {"input", "scales", "zero_points", "dtype", "axis", "div_mode"});
  auto result = call_npu({input, scale, offset, static_cast<int64_t>(at::kQInt8), int64_t(-1),
                          false});
  out.copy_(result[0].toTensor());
}

void dynamic_quant_int8(at::Tensor& out, at::Tensor& scale, const at::Tensor& input) {
  static const NpuCall call_npu("npu::npu_dynamic_quant", {"input"});
  auto result = call_npu({input});
  out.copy_(result[0].toTensor());
  scale.copy_(result[1].toTensor());
}

void int8_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                 const at::Tensor& deq_scale, const std::optional<at::Tensor>& pertoken_scale,
                 const std::optional<at::Tensor>& bias) {
  static const NpuCall call_npu(
      "npu::npu_quant_matmul",
      {"x1", "x2", "scale", "pertoken_scale", "bias", "output_dtype"});
  auto result = call_npu({input, weight.t(), deq_scale, pertoken_scale, bias,
                          static_cast<int64_t>(out.scalar_type())});
  out.copy_(result[0].toTensor());
}

}  // namespace

TORCH_LIBRARY_IMPL(_C_ascend_compat, PrivateUse1, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm);
  m.impl("rotary_embedding", &rotary_embedding);
  m.impl("silu_and_mul", &silu_and_mul);
  m.impl("reshape_and_cache", &reshape_and_cache);
  m.impl("paged_attention", &paged_attention);
  m.impl("concat_and_cache_mla", &concat_and_cache_mla);
  m.impl("paged_attention_mla", &paged_attention_mla);
  m.impl("grouped_matmul", &grouped_matmul);
  m.impl("int8_weight_linear", &int8_weight_linear);
  m.impl("quantize_int8", &quantize_int8);
  m.impl("dynamic_quant_int8", &dynamic_quant_int8);
  m.impl("int8_linear", &int8_linear);
}
