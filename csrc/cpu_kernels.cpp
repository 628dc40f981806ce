// CPU kernels of the _C_ascend_compat ops: vectorized with ATen's Vectorized and
// parallel over tokens (and heads) with at::parallel_for. fp32, bf16 and fp16.
// The schemas are declared once, in vllm_ascend_compat/ops.py.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

using fVec = at::vec::Vectorized<float>;
constexpr int64_t kW = fVec::size();

// Load or store kW elements of T as floats.
template <typename T>
inline fVec load_f(const T* p) {
  return fVec::loadu(p);
}
template <>
inline fVec load_f<at::BFloat16>(const at::BFloat16* p) {
  fVec out;
  at::vec::load_fp32_from_bf16(p, out);
  return out;
}
template <>
inline fVec load_f<at::Half>(const at::Half* p) {
  fVec out;
  at::vec::load_fp32_from_fp16(p, out);
  return out;
}
template <typename T>
inline void store_f(T* p, const fVec& v) {
  v.store(p);
}
// Reduced types: convert kW floats, then a fixed-size copy the compiler turns into one
// store (Vectorized::store with a count takes a slow generic path).
template <>
inline void store_f<at::BFloat16>(at::BFloat16* p, const fVec& v) {
  __at_align__ at::BFloat16 tmp[2 * kW];
  at::vec::convert_float_bfloat16(v, v).store(tmp);
  std::memcpy(p, tmp, kW * sizeof(at::BFloat16));
}
template <>
inline void store_f<at::Half>(at::Half* p, const fVec& v) {
  __at_align__ at::Half tmp[2 * kW];
  at::vec::convert_float_half(v, v).store(tmp);
  std::memcpy(p, tmp, kW * sizeof(at::Half));
}

inline float sum(const fVec& v) {
  return at::vec::vec_reduce_all<float>([](fVec& a, fVec& b) { return a + b; }, v);
}

// Rows of the last dimension: [rows, width] with a row stride; the last dim must be dense.
struct Rows {
  int64_t count, width, stride;
};
Rows rows_of(const at::Tensor& t) {
  TORCH_CHECK(t.stride(-1) == 1, "_C_ascend_compat: the last dimension must be contiguous");
  const int64_t width = t.size(-1);
  const int64_t count = width ? t.numel() / width : 0;
  if (t.dim() == 1) return {count, width, width};
  // Leading dims must collapse into one row dimension with a uniform stride.
  for (int64_t i = 0; i + 2 < t.dim(); ++i)
    TORCH_CHECK(t.stride(i) == t.stride(i + 1) * t.size(i + 1),
                "_C_ascend_compat: rows must have a uniform stride");
  return {count, width, t.stride(-2)};
}

template <typename T>
void rms_norm_rows(T* out, int64_t out_stride, const T* in, const Rows& r, const T* w, float eps) {
  at::parallel_for(0, r.count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* x = in + i * r.stride;
      T* y = out + i * out_stride;
      fVec acc(0.f);
      int64_t d = 0;
      for (; d + kW <= r.width; d += kW) {
        fVec v = load_f(x + d);
        acc = at::vec::fmadd(v, v, acc);
      }
      float ss = sum(acc);
      for (; d < r.width; ++d) ss += float(x[d]) * float(x[d]);
      const float rstd = 1.f / std::sqrt(ss / r.width + eps);
      const fVec vr(rstd);
      d = 0;
      for (; d + kW <= r.width; d += kW) store_f(y + d, load_f(x + d) * vr * load_f(w + d));
      for (; d < r.width; ++d) y[d] = T(float(x[d]) * rstd * float(w[d]));
    }
  });
}

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double epsilon) {
  const Rows r = rows_of(input);
  const Rows o = rows_of(out);
  TORCH_CHECK(o.count == r.count && o.width == r.width, "rms_norm: out and input differ in shape");
  const at::Tensor w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "rms_norm", [&] {
    rms_norm_rows<scalar_t>(out.data_ptr<scalar_t>(), o.stride, input.data_ptr<scalar_t>(), r,
                            w.data_ptr<scalar_t>(), float(epsilon));
  });
}

template <typename T>
void fused_add_rms_norm_rows(T* in, const Rows& r, T* res, int64_t res_stride, const T* w,
                             float eps) {
  at::parallel_for(0, r.count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* x = in + i * r.stride;
      T* s = res + i * res_stride;
      fVec acc(0.f);
      int64_t d = 0;
      for (; d + kW <= r.width; d += kW) {
        store_f(s + d, load_f(x + d) + load_f(s + d));
        fVec v = load_f(s + d);  // the rounded residual, as the reference normalizes it
        acc = at::vec::fmadd(v, v, acc);
      }
      float ss = sum(acc);
      for (; d < r.width; ++d) {
        s[d] = T(float(x[d]) + float(s[d]));
        ss += float(s[d]) * float(s[d]);
      }
      const float rstd = 1.f / std::sqrt(ss / r.width + eps);
      const fVec vr(rstd);
      d = 0;
      for (; d + kW <= r.width; d += kW) store_f(x + d, load_f(s + d) * vr * load_f(w + d));
      for (; d < r.width; ++d) x[d] = T(float(s[d]) * rstd * float(w[d]));
    }
  });
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  const Rows r = rows_of(input);
  const Rows s = rows_of(residual);
  TORCH_CHECK(s.count == r.count && s.width == r.width, "fused_add_rms_norm: shapes differ");
  const at::Tensor w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(),
                                  "fused_add_rms_norm", [&] {
    fused_add_rms_norm_rows<scalar_t>(input.data_ptr<scalar_t>(), r,
                                      residual.data_ptr<scalar_t>(), s.stride,
                                      w.data_ptr<scalar_t>(), float(epsilon));
  });
}

template <typename T>
void silu_and_mul_rows(T* out, int64_t out_stride, const T* in, const Rows& r) {
  const int64_t half = r.width / 2;
  const fVec one(1.f);
  at::parallel_for(0, r.count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* gate = in + i * r.stride;
      const T* up = gate + half;
      T* y = out + i * out_stride;
      int64_t d = 0;
      for (; d + kW <= half; d += kW) {
        fVec g = load_f(gate + d);
        store_f(y + d, g / (one + g.neg().exp_u20()) * load_f(up + d));
      }
      for (; d < half; ++d) {
        float g = float(gate[d]);
        y[d] = T(g / (1.f + std::exp(-g)) * float(up[d]));
      }
    }
  });
}

void silu_and_mul(at::Tensor& out, const at::Tensor& input) {
  const Rows r = rows_of(input);
  const Rows o = rows_of(out);
  TORCH_CHECK(r.width % 2 == 0 && o.width * 2 == r.width && o.count == r.count,
              "silu_and_mul: out must be input with the last dimension halved");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "silu_and_mul",
                                  [&] {
    silu_and_mul_rows<scalar_t>(out.data_ptr<scalar_t>(), o.stride, input.data_ptr<scalar_t>(), r);
  });
}

// [tokens, heads, head_size] view of a query or key given as [tokens, heads * head_size]
// or [tokens, heads, head_size], heads dense within a token.
struct Heads {
  int64_t tokens, heads, token_stride;
};
Heads heads_of(const at::Tensor& t, int64_t head_size) {
  TORCH_CHECK(t.stride(-1) == 1, "rotary_embedding: the last dimension must be contiguous");
  if (t.dim() == 3) {
    TORCH_CHECK(t.size(2) == head_size && t.stride(1) == head_size,
                "rotary_embedding: heads must be dense");
    return {t.size(0), t.size(1), t.stride(0)};
  }
  TORCH_CHECK(t.dim() == 2 && t.size(1) % head_size == 0, "rotary_embedding: bad shape");
  return {t.size(0), t.size(1) / head_size, t.stride(0)};
}

template <typename T, typename index_t>
void rotary(const index_t* positions, T* x, const Heads& h, int64_t head_size, const T* cache,
            int64_t rot_dim, bool is_neox) {
  const int64_t half = rot_dim / 2;
  at::parallel_for(0, h.tokens, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> cs(rot_dim);
    for (int64_t t = begin; t < end; ++t) {
      const T* row = cache + int64_t(positions[t]) * rot_dim;
      for (int64_t d = 0; d < rot_dim; ++d) cs[d] = float(row[d]);
      const float* cos = cs.data();
      const float* sin = cs.data() + half;
      for (int64_t hd = 0; hd < h.heads; ++hd) {
        T* v = x + t * h.token_stride + hd * head_size;
        if (is_neox) {
          int64_t d = 0;
          for (; d + kW <= half; d += kW) {
            fVec x1 = load_f(v + d), x2 = load_f(v + half + d);
            fVec c = fVec::loadu(cos + d), s = fVec::loadu(sin + d);
            store_f(v + d, x1 * c - x2 * s);
            store_f(v + half + d, x2 * c + x1 * s);
          }
          for (; d < half; ++d) {
            float x1 = float(v[d]), x2 = float(v[half + d]);
            v[d] = T(x1 * cos[d] - x2 * sin[d]);
            v[half + d] = T(x2 * cos[d] + x1 * sin[d]);
          }
        } else {
          for (int64_t d = 0; d < half; ++d) {
            float x1 = float(v[2 * d]), x2 = float(v[2 * d + 1]);
            v[2 * d] = T(x1 * cos[d] - x2 * sin[d]);
            v[2 * d + 1] = T(x2 * cos[d] + x1 * sin[d]);
          }
        }
      }
    }
  });
}

void rotary_embedding(const at::Tensor& positions, at::Tensor& query, at::Tensor& key,
                      int64_t head_size, const at::Tensor& cos_sin_cache, bool is_neox) {
  const at::Tensor pos = positions.reshape({-1}).contiguous();
  const at::Tensor cache = cos_sin_cache.to(query.scalar_type()).contiguous();
  const int64_t rot_dim = cache.size(1);
  TORCH_CHECK(rot_dim <= head_size && rot_dim % 2 == 0, "rotary_embedding: bad rotary dim");
  for (at::Tensor* t : {&query, &key}) {
    const Heads h = heads_of(*t, head_size);
    TORCH_CHECK(h.tokens == pos.numel(), "rotary_embedding: one position per token");
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, t->scalar_type(), "rotary", [&] {
      AT_DISPATCH_INDEX_TYPES(pos.scalar_type(), "rotary_index", [&] {
        rotary<scalar_t, index_t>(pos.data_ptr<index_t>(), t->data_ptr<scalar_t>(), h, head_size,
                                  cache.data_ptr<scalar_t>(), rot_dim, is_neox);
      });
    });
  }
}

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "reshape_and_cache: caches must be contiguous");
  TORCH_CHECK(key.scalar_type() == key_cache.scalar_type(),
              "reshape_and_cache: key and cache dtypes differ");
  const int64_t tokens = slot_mapping.numel();
  const int64_t heads = key_cache.size(2), head_size = key_cache.size(3);
  const int64_t row = heads * head_size;
  TORCH_CHECK(key.size(0) >= tokens && key.stride(-1) == 1 && value.stride(-1) == 1,
              "reshape_and_cache: keys must cover every slot, rows dense");
  const at::Tensor slots = slot_mapping.contiguous();
  const int64_t elem = key.element_size();
  auto* kc = static_cast<char*>(key_cache.data_ptr());
  auto* vc = static_cast<char*>(value_cache.data_ptr());
  const auto* k = static_cast<const char*>(key.data_ptr());
  const auto* v = static_cast<const char*>(value.data_ptr());
  const int64_t k_head_stride = key.dim() == 3 ? key.stride(1) : head_size;
  const int64_t v_head_stride = value.dim() == 3 ? value.stride(1) : head_size;
  AT_DISPATCH_INDEX_TYPES(slots.scalar_type(), "reshape_and_cache", [&] {
    const index_t* s = slots.data_ptr<index_t>();
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t slot = s[t];
        if (slot < 0) continue;  // padding
        for (int64_t h = 0; h < heads; ++h) {
          std::memcpy(kc + (slot * row + h * head_size) * elem,
                      k + (t * key.stride(0) + h * k_head_stride) * elem, head_size * elem);
          std::memcpy(vc + (slot * row + h * head_size) * elem,
                      v + (t * value.stride(0) + h * v_head_stride) * elem, head_size * elem);
        }
      }
    });
  });
}

inline float dot(const float* a, const float* b, int64_t n) {
  fVec acc(0.f);
  int64_t d = 0;
  for (; d + kW <= n; d += kW) acc = at::vec::fmadd(fVec::loadu(a + d), fVec::loadu(b + d), acc);
  float s = sum(acc);
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

// y += a * x
inline void axpy(float a, const float* x, float* y, int64_t n) {
  const fVec va(a);
  int64_t d = 0;
  for (; d + kW <= n; d += kW) at::vec::fmadd(va, fVec::loadu(x + d), fVec::loadu(y + d)).store(y + d);
  for (; d < n; ++d) y[d] += a * x[d];
}

// Softmax in place, exponentials vectorized.
inline void softmax(float* s, int64_t n) {
  float mx = -INFINITY;
  for (int64_t l = 0; l < n; ++l) mx = std::max(mx, s[l]);
  const fVec vmx(mx);
  fVec vtotal(0.f);
  int64_t l = 0;
  for (; l + kW <= n; l += kW) {
    fVec e = (fVec::loadu(s + l) - vmx).exp_u20();
    e.store(s + l);
    vtotal = vtotal + e;
  }
  float total = sum(vtotal);
  for (; l < n; ++l) total += (s[l] = std::exp(s[l] - mx));
  const fVec inv(1.f / total);
  l = 0;
  for (; l + kW <= n; l += kW) (fVec::loadu(s + l) * inv).store(s + l);
  for (; l < n; ++l) s[l] /= total;
}

// A row as floats: the row itself for float, else converted into ``buffer``.
template <typename T>
inline const float* to_float(const T* src, float* buffer, int64_t n) {
  int64_t d = 0;
  for (; d + kW <= n; d += kW) load_f(src + d).store(buffer + d);
  for (; d < n; ++d) buffer[d] = float(src[d]);
  return buffer;
}
template <>
inline const float* to_float<float>(const float* src, float*, int64_t) {
  return src;
}

// Decode attention. A task is one sequence and a contiguous range of its kv heads, so
// each cached token row is read as one contiguous span (the cache interleaves heads
// within a token). Rows are converted to float once and shared by every query head of
// the group; softmax runs vectorized over the scores.
template <typename T, typename index_t>
void paged_attention_impl(T* out, const T* query, int64_t q_stride, const T* kc, const T* vc,
                          int64_t block_size, int64_t kv_heads, int64_t head_size, int64_t group,
                          float scale, const index_t* tables, int64_t table_stride,
                          const index_t* lens, int64_t seqs) {
  const int64_t row = kv_heads * head_size;
  const int64_t q_heads = kv_heads * group;
  const int64_t want = (2 * at::get_num_threads() + seqs - 1) / seqs;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(kv_heads, want));
  const int64_t per_chunk = (kv_heads + chunks - 1) / chunks;
  at::parallel_for(0, seqs * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q, row_f(row), scores, acc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks;
      const int64_t kh0 = (task % chunks) * per_chunk;
      const int64_t nh = std::min(kv_heads, kh0 + per_chunk) - kh0;
      if (nh <= 0) continue;
      const int64_t len = lens[b], width = nh * head_size, queries = nh * group;
      const index_t* table = tables + b * table_stride;
      const T* q_src = query + b * q_stride + kh0 * group * head_size;
      q.resize(queries * head_size);
      for (int64_t i = 0; i < queries * head_size; ++i) q[i] = float(q_src[i]) * scale;
      scores.resize(queries * len);
      for (int64_t start = 0; start < len; start += block_size) {
        const T* block = kc + int64_t(table[start / block_size]) * block_size * row;
        const int64_t rows = std::min(block_size, len - start);
        for (int64_t r = 0; r < rows; ++r) {
          const float* kf = to_float(block + r * row + kh0 * head_size, row_f.data(), width);
          for (int64_t i = 0; i < queries; ++i)
            scores[i * len + start + r] =
                dot(q.data() + i * head_size, kf + (i / group) * head_size, head_size);
        }
      }
      for (int64_t i = 0; i < queries; ++i) softmax(scores.data() + i * len, len);
      acc.assign(queries * head_size, 0.f);
      for (int64_t start = 0; start < len; start += block_size) {
        const T* block = vc + int64_t(table[start / block_size]) * block_size * row;
        const int64_t rows = std::min(block_size, len - start);
        for (int64_t r = 0; r < rows; ++r) {
          const float* vf = to_float(block + r * row + kh0 * head_size, row_f.data(), width);
          for (int64_t i = 0; i < queries; ++i)
            axpy(scores[i * len + start + r], vf + (i / group) * head_size,
                 acc.data() + i * head_size, head_size);
        }
      }
      T* o = out + b * q_heads * head_size + kh0 * group * head_size;
      for (int64_t i = 0; i < queries * head_size; ++i) o[i] = T(acc[i]);
    }
  });
}

void paged_attention(at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                     const at::Tensor& value_cache, int64_t num_kv_heads, double scale,
                     const at::Tensor& block_tables, const at::Tensor& seq_lens) {
  TORCH_CHECK(out.is_contiguous() && key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged_attention: out and caches must be contiguous");
  TORCH_CHECK(query.dim() == 3 && query.stride(2) == 1 && query.stride(1) == query.size(2),
              "paged_attention: query must be [seqs, heads, head_size] with dense heads");
  const int64_t seqs = query.size(0), q_heads = query.size(1), head_size = query.size(2);
  TORCH_CHECK(q_heads % num_kv_heads == 0, "paged_attention: heads not a multiple of kv heads");
  const at::Tensor tables = block_tables.contiguous();
  const at::Tensor lens = seq_lens.to(tables.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "paged_attn", [&] {
    AT_DISPATCH_INDEX_TYPES(tables.scalar_type(), "paged_attention_index", [&] {
      paged_attention_impl<scalar_t, index_t>(
          out.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(), query.stride(0),
          key_cache.data_ptr<scalar_t>(), value_cache.data_ptr<scalar_t>(), key_cache.size(1),
          num_kv_heads, head_size, q_heads / num_kv_heads, float(scale),
          tables.data_ptr<index_t>(), tables.size(1), lens.data_ptr<index_t>(), seqs);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(_C_ascend_compat, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm);
  m.impl("rotary_embedding", &rotary_embedding);
  m.impl("silu_and_mul", &silu_and_mul);
  m.impl("reshape_and_cache", &reshape_and_cache);
  m.impl("paged_attention", &paged_attention);
}
