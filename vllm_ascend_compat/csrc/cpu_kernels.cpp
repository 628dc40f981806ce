// CPU kernels of the _C_ascend_compat ops: vectorized with ATen's Vectorized and
// parallel over tokens (and heads) with OpenMP. fp32, bf16 and fp16.
// The schemas are declared once, in vllm_ascend_compat/ops.py.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace {

#include "cpu_vec.h"

#if defined(CPU_CAPABILITY_AVX512)
// kW floats rounded to a reduced type, in one 256-bit register.
inline __m256i to_reduced(const fVec& v, const at::BFloat16*) {
  return at::vec::cvtfp32_bf16(__m512(v));
}
inline __m256i to_reduced(const fVec& v, const at::Half*) {
  return at::vec::cvtfp32_fp16(__m512(v));
}
inline fVec from_reduced(__m256i r, const at::BFloat16*) {
  __m512 out;
  at::vec::cvtbf16_fp32(r, out);
  return out;
}
inline fVec from_reduced(__m256i r, const at::Half*) {
  __m512 out;
  at::vec::cvtfp16_fp32(r, out);
  return out;
}
#endif

// Store kW floats as T.
template <typename T>
inline void store_f(T* p, const fVec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (!std::is_same_v<T, float>) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_reduced(v, p));
    return;
  }
#else
  if constexpr (!std::is_same_v<T, float>) {
    // a fixed-size copy the compiler turns into one store (Vectorized::store with a
    // count takes a slow generic path)
    __at_align__ T tmp[2 * kW];
    if constexpr (std::is_same_v<T, at::BFloat16>)
      at::vec::convert_float_bfloat16(v, v).store(tmp);
    else
      at::vec::convert_float_half(v, v).store(tmp);
    std::memcpy(p, tmp, kW * sizeof(T));
    return;
  }
#endif
  v.store(p);
}

// Store kW floats as T and return them as stored (rounded to T), for kernels that
// keep computing with the value the caller will read back.
template <typename T>
inline fVec store_rounded(T* p, const fVec& v) {
  if constexpr (std::is_same_v<T, float>) {
    v.store(p);
    return v;
  } else {
#if defined(CPU_CAPABILITY_AVX512)
    const __m256i r = to_reduced(v, p);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), r);
    return from_reduced(r, p);
#else
    store_f(p, v);
    return load_f(p);
#endif
  }
}

// Outputs larger than this are written with non-temporal stores: they leave the
// caches anyway, and streaming them saves reading each output line before writing it
// (a third of the traffic of a kernel that reads one tensor and writes another).
constexpr int64_t kStreamBytes = int64_t(8) << 20;

// store_f, bypassing the caches where the address allows it. fp32 only: a reduced-type
// vector is half a cache line, and those half-line non-temporal stores measured slower
// than cached ones (silu_and_mul, 4096 x 4096 bf16: 7.8 ms cached, 10.5 ms streamed).
template <typename T>
inline void stream_f(T* p, const fVec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    if (reinterpret_cast<std::uintptr_t>(p) % 64 == 0)
      return _mm512_stream_ps(reinterpret_cast<float*>(p), v);
  }
#endif
  store_f(p, v);
}

// Orders a thread's streamed stores before the kernel returns.
inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512)
  _mm_sfence();
#endif
}

template <bool kStream, typename T>
inline void put(T* p, const fVec& v) {
  if constexpr (kStream)
    stream_f(p, v);
  else
    store_f(p, v);
}

// Calls body.template operator()<kStream>() with kStream = whether ``bytes`` of output
// should be streamed.
template <typename F>
inline void with_streaming(int64_t bytes, const F& body) {
  if (bytes >= kStreamBytes)
    body.template operator()<true>();
  else
    body.template operator()<false>();
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

// Rows per parallel grain: a second thread is only woken for 8K elements or more.
// Decode-sized ops take microseconds on one thread; spreading them costs a wake-up and
// a barrier that waits for the slowest thread, which on a busy machine can be a whole
// scheduler time slice.
inline int64_t grain_rows(int64_t width) {
  return std::max<int64_t>(1, (int64_t(8) << 10) / std::max<int64_t>(width, 1));
}

// f(begin, end) over [0, count) split evenly across at most count / grain threads: one
// OpenMP region, without at::parallel_for's per-call guards, which show at decode sizes
// (a few microseconds per op).
template <typename F>
inline void parallel_rows(int64_t count, int64_t grain, const F& f) {
#if defined(_OPENMP)
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), count / std::max<int64_t>(grain, 1));
  if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
    {
      const int64_t n = omp_get_num_threads(), per = (count + n - 1) / n;
      const int64_t begin = omp_get_thread_num() * per, end = std::min(count, begin + per);
      if (begin < end) f(begin, end);
    }
    return;
  }
#endif
  if (count > 0) f(0, count);
}

// Sum of squares of a row, with four accumulators so the adds do not wait on each other.
template <typename T>
inline float sum_squares(const T* x, int64_t n) {
  fVec a0(0.f), a1(0.f), a2(0.f), a3(0.f);
  int64_t d = 0;
  for (; d + 4 * kW <= n; d += 4 * kW) {
    const fVec v0 = load_f(x + d), v1 = load_f(x + d + kW);
    const fVec v2 = load_f(x + d + 2 * kW), v3 = load_f(x + d + 3 * kW);
    a0 = at::vec::fmadd(v0, v0, a0);
    a1 = at::vec::fmadd(v1, v1, a1);
    a2 = at::vec::fmadd(v2, v2, a2);
    a3 = at::vec::fmadd(v3, v3, a3);
  }
  for (; d + kW <= n; d += kW) {
    const fVec v = load_f(x + d);
    a0 = at::vec::fmadd(v, v, a0);
  }
  float ss = sum((a0 + a1) + (a2 + a3));
  for (; d < n; ++d) ss += float(x[d]) * float(x[d]);
  return ss;
}

// y = x * rstd * w over a row.
template <bool kStream, typename T>
inline void normalize_row(T* y, const T* x, const T* w, float rstd, int64_t n) {
  const fVec vr(rstd);
  int64_t d = 0;
  for (; d + kW <= n; d += kW) put<kStream>(y + d, load_f(x + d) * vr * load_f(w + d));
  for (; d < n; ++d) y[d] = T(float(x[d]) * rstd * float(w[d]));
}

// normalize_row, prefetching the same span of two other rows (the next row's input and
// residual) as it goes, so the next row's first pass reads them from cache rather than
// waiting on memory: fused_add_rms_norm runs 10-15% faster at prefill sizes for it.
template <typename T>
inline void normalize_row_prefetching(T* y, const T* x, const T* w, float rstd, int64_t n,
                                      const T* next_a, const T* next_b) {
  const fVec vr(rstd);
  int64_t d = 0;
  for (; d + kW <= n; d += kW) {
    __builtin_prefetch(next_a + d);
    __builtin_prefetch(next_b + d);
    put<false>(y + d, load_f(x + d) * vr * load_f(w + d));
  }
  for (; d < n; ++d) y[d] = T(float(x[d]) * rstd * float(w[d]));
}

// Two passes over each row (sum of squares, then the scaled write) while it is still
// in L1/L2.
template <typename T>
void rms_norm_rows(T* out, int64_t out_stride, const T* in, const Rows& r, const T* w, float eps) {
  with_streaming(r.count * r.width * int64_t(sizeof(T)), [&]<bool kStream>() {
    parallel_rows(r.count, grain_rows(r.width), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T* x = in + i * r.stride;
        const float rstd = 1.f / std::sqrt(sum_squares(x, r.width) / r.width + eps);
        normalize_row<kStream>(out + i * out_stride, x, w, rstd, r.width);
      }
      if constexpr (kStream) stream_fence();
    });
  });
}

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double epsilon) {
  const Rows r = rows_of(input);
  const Rows o = rows_of(out);
  TORCH_CHECK(o.count == r.count && o.width == r.width, "rms_norm: out and input differ in shape");
  const at::Tensor w = weight.contiguous();
  DISPATCH_FLOAT_TYPES(input.scalar_type(), "rms_norm", [&] {
    rms_norm_rows<scalar_t>(out.data_ptr<scalar_t>(), o.stride, input.data_ptr<scalar_t>(), r,
                            w.data_ptr<scalar_t>(), float(epsilon));
  });
}

// residual = x + residual (rounded to T, as the reference normalizes the stored
// residual); returns the sum of squares of the new residual.
template <typename T>
inline float add_residual_row(const T* x, T* s, int64_t n) {
  fVec a0(0.f), a1(0.f);
  int64_t d = 0;
  for (; d + 2 * kW <= n; d += 2 * kW) {
    const fVec v0 = store_rounded(s + d, load_f(x + d) + load_f(s + d));
    const fVec v1 = store_rounded(s + d + kW, load_f(x + d + kW) + load_f(s + d + kW));
    a0 = at::vec::fmadd(v0, v0, a0);
    a1 = at::vec::fmadd(v1, v1, a1);
  }
  for (; d + kW <= n; d += kW) {
    const fVec v = store_rounded(s + d, load_f(x + d) + load_f(s + d));
    a0 = at::vec::fmadd(v, v, a0);
  }
  float ss = sum(a0 + a1);
  for (; d < n; ++d) {
    s[d] = T(float(x[d]) + float(s[d]));
    ss += float(s[d]) * float(s[d]);
  }
  return ss;
}

template <typename T>
void fused_add_rms_norm_rows(T* in, const Rows& r, T* res, int64_t res_stride, const T* w,
                             float eps) {
  parallel_rows(r.count, grain_rows(r.width), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* x = in + i * r.stride;
      T* s = res + i * res_stride;
      const float rstd = 1.f / std::sqrt(add_residual_row(x, s, r.width) / r.width + eps);
      const int64_t next = i + 1 < end ? i + 1 : i;
      // in place, not streamed: the row's lines are cached
      normalize_row_prefetching(x, s, w, rstd, r.width, in + next * r.stride,
                                res + next * res_stride);
    }
  });
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  const Rows r = rows_of(input);
  const Rows s = rows_of(residual);
  TORCH_CHECK(s.count == r.count && s.width == r.width, "fused_add_rms_norm: shapes differ");
  const at::Tensor w = weight.contiguous();
  DISPATCH_FLOAT_TYPES(input.scalar_type(),
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
  with_streaming(r.count * half * int64_t(sizeof(T)), [&]<bool kStream>() {
    parallel_rows(r.count, grain_rows(r.width), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T* gate = in + i * r.stride;
        const T* up = gate + half;
        T* y = out + i * out_stride;
        int64_t d = 0;
        for (; d + kW <= half; d += kW) {
          const fVec g = load_f(gate + d);
          const fVec e = g.neg().exp_u20();  // clamps at FLT_MAX: silu(g) -> -0
          put<kStream>(y + d, g / (one + e) * load_f(up + d));
        }
        for (; d < half; ++d) {
          const float g = float(gate[d]);
          y[d] = T(g / (1.f + std::exp(-g)) * float(up[d]));
        }
      }
      if constexpr (kStream) stream_fence();
    });
  });
}

void silu_and_mul(at::Tensor& out, const at::Tensor& input) {
  const Rows r = rows_of(input);
  const Rows o = rows_of(out);
  TORCH_CHECK(r.width % 2 == 0 && o.width * 2 == r.width && o.count == r.count,
              "silu_and_mul: out must be input with the last dimension halved");
  DISPATCH_FLOAT_TYPES(input.scalar_type(), "silu_and_mul",
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

// Rotates the first 2 * half elements of one head in place: neox pairs element d with
// d + half, gptj pairs neighbours.
template <typename T>
inline void rotate_head(T* v, const float* cos, const float* sin, int64_t half, bool is_neox) {
  if (is_neox) {
    int64_t d = 0;
    for (; d + kW <= half; d += kW) {
      const fVec x1 = load_f(v + d), x2 = load_f(v + half + d);
      const fVec c = fVec::loadu(cos + d), s = fVec::loadu(sin + d);
      store_f(v + d, x1 * c - x2 * s);
      store_f(v + half + d, x2 * c + x1 * s);
    }
    for (; d < half; ++d) {
      const float x1 = float(v[d]), x2 = float(v[half + d]);
      v[d] = T(x1 * cos[d] - x2 * sin[d]);
      v[half + d] = T(x2 * cos[d] + x1 * sin[d]);
    }
  } else {
    for (int64_t d = 0; d < half; ++d) {
      const float x1 = float(v[2 * d]), x2 = float(v[2 * d + 1]);
      v[2 * d] = T(x1 * cos[d] - x2 * sin[d]);
      v[2 * d + 1] = T(x2 * cos[d] + x1 * sin[d]);
    }
  }
}

// Query and key of a token are rotated together, so its cos/sin row is converted once
// and both tensors are swept in one parallel pass.
template <typename T, typename index_t>
void rotary(const index_t* positions, T* q, const Heads& qh, T* k, const Heads& kh,
            int64_t head_size, const T* cache, int64_t rot_dim, bool is_neox) {
  const int64_t half = rot_dim / 2;
  const int64_t grain = grain_rows((qh.heads + kh.heads) * rot_dim);
  parallel_rows(qh.tokens, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> cs(rot_dim);
    for (int64_t t = begin; t < end; ++t) {
      const T* row = cache + int64_t(positions[t]) * rot_dim;
      int64_t d = 0;
      for (; d + kW <= rot_dim; d += kW) load_f(row + d).store(cs.data() + d);
      for (; d < rot_dim; ++d) cs[d] = float(row[d]);
      for (int64_t h = 0; h < qh.heads; ++h)
        rotate_head(q + t * qh.token_stride + h * head_size, cs.data(), cs.data() + half, half,
                    is_neox);
      for (int64_t h = 0; h < kh.heads; ++h)
        rotate_head(k + t * kh.token_stride + h * head_size, cs.data(), cs.data() + half, half,
                    is_neox);
    }
  });
}

void rotary_embedding(const at::Tensor& positions, at::Tensor& query, at::Tensor& key,
                      int64_t head_size, const at::Tensor& cos_sin_cache, bool is_neox) {
  const at::Tensor pos = positions.reshape({-1}).contiguous();
  const at::Tensor cache = cos_sin_cache.to(query.scalar_type()).contiguous();
  const int64_t rot_dim = cache.size(1);
  TORCH_CHECK(rot_dim <= head_size && rot_dim % 2 == 0, "rotary_embedding: bad rotary dim");
  TORCH_CHECK(key.scalar_type() == query.scalar_type(), "rotary_embedding: dtypes differ");
  const Heads qh = heads_of(query, head_size), kh = heads_of(key, head_size);
  TORCH_CHECK(qh.tokens == pos.numel() && kh.tokens == pos.numel(),
              "rotary_embedding: one position per token");
  DISPATCH_FLOAT_TYPES(query.scalar_type(), "rotary", [&] {
    AT_DISPATCH_INDEX_TYPES(pos.scalar_type(), "rotary_index", [&] {
      rotary<scalar_t, index_t>(pos.data_ptr<index_t>(), query.data_ptr<scalar_t>(), qh,
                                key.data_ptr<scalar_t>(), kh, head_size,
                                cache.data_ptr<scalar_t>(), rot_dim, is_neox);
    });
  });
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
    parallel_rows(tokens, 64, [&](int64_t begin, int64_t end) {
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

// --- Decode attention --------------------------------------------------------------------
//
// The cache interleaves kv heads within a token row, so a task covers a range of kv
// heads of one sequence and walks the cached rows in tiles of kW tokens, all its heads
// per tile: a tile's rows are one contiguous span, prefetched in address order while
// the tile before it is computed (one head's rows alone are 256-byte pieces at a 2 KB
// stride, which the hardware prefetcher follows poorly). Within a tile, the query heads
// sharing a kv head (GQA) are processed together, so each key and value vector is
// loaded once for all of them, and the scores of a whole block go through one online
// softmax step.


// Cached rows of one kv head: row t at ``base + t * stride``; ``count`` rows.
template <typename T>
struct KvRows {
  const T* base = nullptr;
  int64_t stride = 0, count = 0;
  const T* row(int64_t t) const { return base + t * stride; }
};

// A tile of cache rows read soon, asked for a few cache lines per step of the work
// before it, in address order: the requests stream through memory sequentially and
// never pile up.
class Ahead {
 public:
  Ahead() = default;
  Ahead(const void* base, int64_t stride, int64_t rows, int64_t row_bytes, int64_t steps)
      : row_(static_cast<const char*>(base)), stride_(stride), rows_(rows), row_bytes_(row_bytes),
        per_step_(((row_bytes + 63) / 64 * rows + steps - 1) / std::max<int64_t>(steps, 1)) {}
  void step() {
    for (int64_t i = 0; i < per_step_ && rows_ > 0; ++i) {
      __builtin_prefetch(row_ + offset_);
      if ((offset_ += 64) >= row_bytes_) offset_ = 0, row_ += stride_, --rows_;
    }
  }

 private:
  const char* row_ = nullptr;
  int64_t stride_ = 0, rows_ = 0, row_bytes_ = 0, per_step_ = 0, offset_ = 0;
};

// s[g * ld + t] = q_g . k_t for kG query heads (fp32, pre-scaled) and k.count <= kW key
// rows. Each key vector is loaded once for all kG heads. Each row computed is one step
// of the prefetch of the tiles in ``ahead``.
// kHS: the head size when known at compile time (64, 128), else 0. Known, and small
// enough (kG * kHS / kW vectors), the query heads stay in registers over the rows.
template <int kG, int kHS, typename T>
void tile_scores(const float* q, int64_t head_size, KvRows<T> k, float* s, int64_t ld,
                 Ahead (&ahead)[2]) {
  if constexpr (kHS > 0) head_size = kHS;
  const int64_t vec_end = head_size - head_size % kW;
  constexpr int kQ = kHS > 0 && kG * kHS / kW <= 16 ? kHS / kW : 0;  // vectors per head
  fVec qv[kG][kQ > 0 ? kQ : 1];
  if constexpr (kQ > 0)
    for (int g = 0; g < kG; ++g)
      for (int c = 0; c < kQ; ++c) qv[g][c] = fVec::loadu(q + g * kHS + c * kW);
  __at_align__ float partial[kG][kW][kW];  // [head][row]: lanes of q_g * k_row
  for (int64_t t = 0; t < kW; ++t) {
    if (t >= k.count) {  // pad the last tile of a sequence
      for (int g = 0; g < kG; ++g) fVec(0.f).store(partial[g][t]);
      continue;
    }
    ahead[0].step();
    ahead[1].step();
    const T* key = k.row(t);
    fVec acc[kG];
    for (int g = 0; g < kG; ++g) acc[g] = fVec(0.f);
    if constexpr (kQ > 0) {
      for (int c = 0; c < kQ; ++c) {
        const fVec kv = load_f(key + c * kW);
        for (int g = 0; g < kG; ++g) acc[g] = at::vec::fmadd(qv[g][c], kv, acc[g]);
      }
    } else {
      for (int64_t d = 0; d < vec_end; d += kW) {
        const fVec kv = load_f(key + d);
        for (int g = 0; g < kG; ++g)
          acc[g] = at::vec::fmadd(fVec::loadu(q + g * head_size + d), kv, acc[g]);
      }
    }
    for (int g = 0; g < kG; ++g) {
      acc[g].store(partial[g][t]);
      for (int64_t d = vec_end; d < head_size; ++d)
        partial[g][t][0] += q[g * head_size + d] * float(key[d]);
    }
  }
  for (int g = 0; g < kG; ++g) transpose_sum(&partial[g][0][0]).store(s + g * ld, k.count);
}

// acc_g += sum_t p[g * ld + t] * v_t over v.count value rows, kG heads at once: each
// value vector is loaded once, and the accumulators of kC vectors of head_size stay in
// registers over the rows (kG * kC independent FMA chains).
template <int kG, int kHS, typename T>
void tile_values(const float* p, int64_t ld, KvRows<T> v, float* acc, int64_t head_size) {
  if constexpr (kHS > 0) head_size = kHS;
  constexpr int kC = kG <= 4 ? 2 : 1;
  int64_t d = 0;
  for (; d + kC * kW <= head_size; d += kC * kW) {
    fVec a[kG][kC];
    for (int g = 0; g < kG; ++g)
      for (int c = 0; c < kC; ++c) a[g][c] = fVec::loadu(acc + g * head_size + d + c * kW);
    for (int64_t t = 0; t < v.count; ++t) {
      fVec x[kC];
      for (int c = 0; c < kC; ++c) x[c] = load_f(v.row(t) + d + c * kW);
      for (int g = 0; g < kG; ++g) {
        const fVec w(p[g * ld + t]);
        for (int c = 0; c < kC; ++c) a[g][c] = at::vec::fmadd(w, x[c], a[g][c]);
      }
    }
    for (int g = 0; g < kG; ++g)
      for (int c = 0; c < kC; ++c) a[g][c].store(acc + g * head_size + d + c * kW);
  }
  for (; d < head_size; ++d)
    for (int g = 0; g < kG; ++g)
      for (int64_t t = 0; t < v.count; ++t)
        acc[g * head_size + d] += p[g * ld + t] * float(v.row(t)[d]);
}



struct DecodeShape {
  int64_t block_size, kv_heads, head_size, group, q_stride;
  float scale;
};

// Query heads of kv heads [h0, h0 + nh) of one sequence: per cache block, the scores of
// the whole block tile by tile, one softmax step per query head, then the values tile
// by tile. ``buffer`` is the calling thread's scratch space. kHS: see tile_scores.
template <int kHS, typename T, typename index_t>
void attend(T* out, const T* query, const T* kc, const T* vc, const DecodeShape& sh,
            const index_t* table, int64_t len, int64_t h0, int64_t nh, std::vector<float>& buffer) {
  const int64_t hs = sh.head_size, bs = sh.block_size, row = sh.kv_heads * hs;
  const int64_t queries = nh * sh.group;
  buffer.resize(queries * (2 * hs + bs + 2));
  float* q = buffer.data();           // [queries, hs], scaled
  float* acc = q + queries * hs;      // [queries, hs]
  float* s = acc + queries * hs;      // [queries, bs]: scores, then probabilities
  float* max = s + queries * bs;      // [queries]
  float* total = max + queries;       // [queries]
  const T* q_src = query + h0 * sh.group * hs;
  for (int64_t i = 0; i < queries * hs; ++i) q[i] = float(q_src[i]) * sh.scale, acc[i] = 0.f;
  for (int64_t i = 0; i < queries; ++i) max[i] = -INFINITY, total[i] = 0.f;
  // row t0 .. t0 + kW - 1 of kv head h0 + h in the cache block holding token ``start``
  auto tile = [&](const T* cache, int64_t start, int64_t t0, int64_t h) {
    if (start >= len) return KvRows<T>{};
    const int64_t block = table[start / bs], n = std::min(bs, len - start);
    return KvRows<T>{cache + (block * bs + t0) * row + (h0 + h) * hs, row,
                     std::min(kW, n - t0)};
  };
  // the same rows, all heads of the task, prefetched over the nh * kW rows of a tile
  auto span = [&](const T* cache, int64_t start, int64_t t0) {
    const KvRows<T> rows = tile(cache, start, t0, 0);
    const int64_t size = int64_t(sizeof(T));
    return Ahead(rows.base, row * size, rows.count, nh * hs * size, nh * kW);
  };
  for (int64_t start = 0; start < len; start += bs) {
    const int64_t n = std::min(bs, len - start);
    for (int64_t t0 = 0; t0 < n; t0 += kW) {
      // this tile's values (for the value pass below) and the next tile's keys
      Ahead ahead[2] = {
          span(vc, start, t0), t0 + kW < n ? span(kc, start, t0 + kW) : span(kc, start + bs, 0)};
      for (int64_t h = 0; h < nh; ++h)
        for_each_head_tile(sh.group, [&]<int kG>(int64_t g0) {
          const int64_t i = h * sh.group + g0;
          tile_scores<kG, kHS>(q + i * hs, hs, tile(kc, start, t0, h), s + i * bs + t0, bs, ahead);
        });
    }
    for (int64_t i = 0; i < queries; ++i) {
      const float factor = softmax_step(s + i * bs, n, max[i], total[i]);
      if (factor != 1.f)
        for (int64_t d = 0; d < hs; ++d) acc[i * hs + d] *= factor;
    }
    for (int64_t t0 = 0; t0 < n; t0 += kW)
      for (int64_t h = 0; h < nh; ++h)
        for_each_head_tile(sh.group, [&]<int kG>(int64_t g0) {
          const int64_t i = h * sh.group + g0;
          tile_values<kG, kHS>(s + i * bs + t0, bs, tile(vc, start, t0, h), acc + i * hs, hs);
        });
  }
  T* o = out + h0 * sh.group * hs;
  for (int64_t i = 0; i < queries; ++i) {
    const float inv = total[i] > 0.f ? 1.f / total[i] : 0.f;  // an empty sequence gives 0
    for (int64_t d = 0; d < hs; ++d) o[i * hs + d] = T(acc[i * hs + d] * inv);
  }
}

// Decode attention over the paged cache [num_blocks, block_size, kv_heads, head_size].
// A task is one sequence and a range of its kv heads: whole sequences when there are
// enough of them to keep the threads busy, else each split into head ranges. Threads
// take tasks from a shared counter, so sequences of different lengths still balance.
template <typename T, typename index_t>
void paged_attention_impl(T* out, const T* query, const T* kc, const T* vc, const DecodeShape& sh,
                          const index_t* tables, int64_t table_stride, const index_t* lens,
                          int64_t seqs) {
  const int64_t threads = at::get_num_threads();
  const int64_t want = (2 * threads + seqs - 1) / seqs;  // two tasks per thread
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(sh.kv_heads, want));
  const int64_t per_chunk = (sh.kv_heads + chunks - 1) / chunks;
  const int64_t tasks = seqs * chunks;
  const int64_t q_heads = sh.kv_heads * sh.group;
  auto* attend_task = sh.head_size == 64    ? &attend<64, T, index_t>
                      : sh.head_size == 128 ? &attend<128, T, index_t>
                                            : &attend<0, T, index_t>;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(threads, tasks), 1, [&](int64_t, int64_t) {
    std::vector<float> buffer;
    for (int64_t task = next++; task < tasks; task = next++) {
      const int64_t b = task / chunks, h0 = (task % chunks) * per_chunk;
      const int64_t nh = std::min(sh.kv_heads, h0 + per_chunk) - h0;
      if (nh <= 0) continue;
      attend_task(out + b * q_heads * sh.head_size, query + b * sh.q_stride, kc, vc, sh,
             tables + b * table_stride, int64_t(lens[b]), h0, nh, buffer);
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
  const DecodeShape shape{key_cache.size(1), num_kv_heads,    head_size,
                          q_heads / num_kv_heads, query.stride(0), float(scale)};
  DISPATCH_FLOAT_TYPES(query.scalar_type(), "paged_attn", [&] {
    AT_DISPATCH_INDEX_TYPES(tables.scalar_type(), "paged_attention_index", [&] {
      paged_attention_impl<scalar_t, index_t>(
          out.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(), key_cache.data_ptr<scalar_t>(),
          value_cache.data_ptr<scalar_t>(), shape, tables.data_ptr<index_t>(), tables.size(1),
          lens.data_ptr<index_t>(), seqs);
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
