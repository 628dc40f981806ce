// Vector helpers the CPU kernel files share (cpu_kernels.cpp, mla_kernels.cpp): float
// loads of fp32 / bf16 / fp16, reductions, and the online-softmax step of paged attention.
// Included inside each file's anonymous namespace.

#pragma once

// The kernels' element types: fp32, bf16, fp16 (other types get ATen's "not implemented").
#define DISPATCH_FLOAT_TYPES(TYPE, NAME, ...)                    \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__)          \
                         AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__))

using fVec = at::vec::Vectorized<float>;
constexpr int64_t kW = fVec::size();

// Load kW elements of T as floats.
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

inline float sum(const fVec& v) {
  return at::vec::vec_reduce_all<float>([](fVec& a, fVec& b) { return a + b; }, v);
}

// Lane i of the result is the sum of row i of a kW x kW tile: kW dot products finished
// with one shuffle tree instead of kW separate horizontal sums.
inline fVec transpose_sum(const float* rows) {
#if defined(CPU_CAPABILITY_AVX512)
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3]
    const __m512 x = _mm512_load_ps(rows + 2 * i * kW);
    const __m512 y = _mm512_load_ps(rows + (2 * i + 1) * kW);
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
  }
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: the lane's sums of rows 4i .. 4i+3
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0xEE));
  // then across 128-bit lanes, two at a time
  const __m512 c0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88),
                                  _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 c1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88),
                                  _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c0, c1, 0x88), _mm512_shuffle_f32x4(c0, c1, 0xDD));
#else
  __at_align__ float out[kW];
  for (int64_t i = 0; i < kW; ++i) out[i] = sum(fVec::loadu(rows + i * kW));
  return fVec::loadu(out);
#endif
}

// Calls f.template operator()<kG>(g0) over query heads [0, group) in tiles of 8, 4, 2, 1.
template <typename F>
inline void for_each_head_tile(int64_t group, const F& f) {
  for (int64_t g0 = 0; g0 < group;) {
    const int64_t left = group - g0;
    if (left >= 8) {
      f.template operator()<8>(g0);
      g0 += 8;
    } else if (left >= 4) {
      f.template operator()<4>(g0);
      g0 += 4;
    } else if (left >= 2) {
      f.template operator()<2>(g0);
      g0 += 2;
    } else {
      f.template operator()<1>(g0);
      g0 += 1;
    }
  }
}

// Folds a block of scores into one query head's running softmax (online softmax): the
// scores become exp(score - max) against the new running max. Returns the factor the
// output accumulated so far must be scaled by.
inline float softmax_step(float* s, int64_t n, float& max, float& total) {
  fVec vblock_max(-INFINITY);
  int64_t t = 0;
  for (; t + kW <= n; t += kW) vblock_max = at::vec::maximum(vblock_max, fVec::loadu(s + t));
  float block_max = at::vec::vec_reduce_all<float>(
      [](fVec& a, fVec& b) { return at::vec::maximum(a, b); }, vblock_max);
  for (; t < n; ++t) block_max = std::max(block_max, s[t]);
  const float new_max = std::max(max, block_max);
  const fVec vmax(new_max);
  fVec vsum(0.f);
  for (t = 0; t + kW <= n; t += kW) {
    const fVec e = (fVec::loadu(s + t) - vmax).exp_u20();
    e.store(s + t);
    vsum = vsum + e;
  }
  float block_sum = sum(vsum);
  for (; t < n; ++t) block_sum += (s[t] = std::exp(s[t] - new_max));
  const float factor = std::exp(max - new_max);  // 0 on the first block (max = -inf)
  total = total * factor + block_sum;
  max = new_max;
  return factor;
}
