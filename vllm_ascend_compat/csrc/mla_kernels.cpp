// CPU kernels of the MLA (multi-head latent attention) ops and of the MoE experts'
// grouped matmul. fp32, bf16 and fp16. The schemas are declared in
// vllm_ascend_compat/ops.py.
//
// MLA caches one latent row per token, [num_blocks, block_size, L + R]: the compressed
// KV (L = kv_lora_rank), then the rope key (R). With the up-projections absorbed into
// the query and the output, decode is N query heads attending to that single row:
// keys are the whole rows, values their first L columns.

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

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace {

#include "cpu_vec.h"

// --- Cache write ---------------------------------------------------------------------------

// A block's rows are dense, the blocks themselves may be strided (vLLM can hand out a
// cache that is a view of a larger allocation).
void concat_and_cache_mla(const at::Tensor& kv_c, const at::Tensor& k_pe, at::Tensor& kv_cache,
                          const at::Tensor& slot_mapping) {
  TORCH_CHECK(kv_c.dim() == 2 && kv_c.stride(1) == 1,
              "concat_and_cache_mla: kv_c must be [tokens, kv_lora_rank] with dense rows, got ",
              kv_c.sizes());
  TORCH_CHECK((k_pe.dim() == 2 || (k_pe.dim() == 3 && k_pe.size(1) == 1)) && k_pe.stride(-1) == 1,
              "concat_and_cache_mla: k_pe must be [tokens, rope_dim] or [tokens, 1, rope_dim] "
              "with dense rows, got ", k_pe.sizes());
  const int64_t lora = kv_c.size(1), rope = k_pe.size(-1), width = lora + rope;
  TORCH_CHECK(kv_cache.dim() == 3 && kv_cache.size(2) == width && kv_cache.stride(2) == 1 &&
                  kv_cache.stride(1) == width,
              "concat_and_cache_mla: kv_cache must be [blocks, block_size, kv_lora_rank + "
              "rope_dim] = [., ., ", width, "] with dense rows in a block, got ", kv_cache.sizes(),
              " with strides ", kv_cache.strides());
  TORCH_CHECK(kv_c.scalar_type() == kv_cache.scalar_type() &&
                  k_pe.scalar_type() == kv_cache.scalar_type(),
              "concat_and_cache_mla: kv_c, k_pe and kv_cache dtypes differ");
  TORCH_CHECK(slot_mapping.dim() == 1, "concat_and_cache_mla: slot_mapping must be 1-D");
  const int64_t tokens = slot_mapping.numel();
  TORCH_CHECK(kv_c.size(0) >= tokens && k_pe.size(0) >= tokens,
              "concat_and_cache_mla: kv_c and k_pe must have a row for each of the ", tokens,
              " slots");
  const at::Tensor slots = slot_mapping.contiguous();
  const int64_t block_size = kv_cache.size(1), capacity = kv_cache.size(0) * block_size;
  const int64_t elem = kv_cache.element_size(), block_stride = kv_cache.stride(0);
  const int64_t c_stride = kv_c.stride(0), pe_stride = k_pe.stride(0);
  auto* cache = static_cast<char*>(kv_cache.data_ptr());
  const auto* c = static_cast<const char*>(kv_c.data_ptr());
  const auto* pe = static_cast<const char*>(k_pe.data_ptr());
  AT_DISPATCH_INDEX_TYPES(slots.scalar_type(), "concat_and_cache_mla", [&] {
    const index_t* s = slots.data_ptr<index_t>();
    at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t slot = s[t];
        if (slot < 0) continue;  // padding
        TORCH_CHECK(slot < capacity, "concat_and_cache_mla: slot ", slot, " is past the ",
                    capacity, " slots of the cache");
        char* row = cache + ((slot / block_size) * block_stride + slot % block_size * width) * elem;
        std::memcpy(row, c + t * c_stride * elem, lora * elem);
        std::memcpy(row + lora * elem, pe + t * pe_stride * elem, rope * elem);
      }
    });
  });
}

// --- Decode attention ----------------------------------------------------------------------
//
// A task is one sequence and a range of its query heads. It walks the sequence block by
// block: the scores of the block's rows, kW rows at a time for all the task's heads (each
// key vector loaded once per tile of up to 8 heads), one online softmax step per head,
// then the values, each value vector loaded once per head tile while the block is still in
// cache. So each cached row comes from memory once per task, whatever the number of heads.

struct MlaShape {
  int64_t block_size, block_stride, width, lora;  // width: a cached row, L + R
  float scale;
};

// s[g * ld + t] = q_g . row_t for kG query heads (fp32, pre-scaled, ``width`` apart) and
// the ``count`` <= kW cache rows at ``rows``.
template <int kG, typename T>
void tile_scores(const float* q, const T* rows, int64_t count, int64_t width, float* s,
                 int64_t ld) {
  const int64_t vec_end = width - width % kW;
  __at_align__ float partial[kG][kW][kW];  // [head][row]: lanes of q_g * row_t
  for (int64_t t = 0; t < kW; ++t) {
    if (t >= count) {  // pad the last tile of a block
      for (int g = 0; g < kG; ++g) fVec(0.f).store(partial[g][t]);
      continue;
    }
    const T* key = rows + t * width;
    fVec acc[kG];
    for (int g = 0; g < kG; ++g) acc[g] = fVec(0.f);
    for (int64_t d = 0; d < vec_end; d += kW) {
      const fVec k = load_f(key + d);
      for (int g = 0; g < kG; ++g)
        acc[g] = at::vec::fmadd(fVec::loadu(q + g * width + d), k, acc[g]);
    }
    // two loops: with the tail in the first, GCC keeps acc[] in memory, a store per FMA
    for (int g = 0; g < kG; ++g) acc[g].store(partial[g][t]);
    for (int g = 0; g < kG; ++g)
      for (int64_t d = vec_end; d < width; ++d)
        partial[g][t][0] += q[g * width + d] * float(key[d]);
  }
  for (int g = 0; g < kG; ++g) transpose_sum(&partial[g][0][0]).store(s + g * ld, count);
}

// acc_g[0, lora) += sum_t p[g * ld + t] * row_t[0, lora) over ``count`` rows, kG heads at
// once: each value vector is loaded once, and the accumulators of kC vectors stay in
// registers over all the rows (kG * kC independent FMA chains).
template <int kG, typename T>
void tile_values(const float* p, int64_t ld, const T* rows, int64_t count, int64_t width,
                 float* acc, int64_t lora) {
  constexpr int kC = kG <= 4 ? 2 : 1;
  int64_t d = 0;
  for (; d + kC * kW <= lora; d += kC * kW) {
    fVec a[kG][kC];
    for (int g = 0; g < kG; ++g)
      for (int c = 0; c < kC; ++c) a[g][c] = fVec::loadu(acc + g * lora + d + c * kW);
    for (int64_t t = 0; t < count; ++t) {
      fVec x[kC];
      for (int c = 0; c < kC; ++c) x[c] = load_f(rows + t * width + d + c * kW);
#pragma GCC unroll 8  // else GCC keeps a[][] in memory, a store per FMA
      for (int g = 0; g < kG; ++g) {
        const fVec w(p[g * ld + t]);
        for (int c = 0; c < kC; ++c) a[g][c] = at::vec::fmadd(w, x[c], a[g][c]);
      }
    }
    for (int g = 0; g < kG; ++g)
      for (int c = 0; c < kC; ++c) a[g][c].store(acc + g * lora + d + c * kW);
  }
  for (; d < lora; ++d)
    for (int g = 0; g < kG; ++g)
      for (int64_t t = 0; t < count; ++t)
        acc[g * lora + d] += p[g * ld + t] * float(rows[t * width + d]);
}

// Query heads [0, nh) of one sequence (``query`` and ``out`` point at the first, heads
// ``q_head`` and ``o_head`` apart). ``buffer`` is the calling thread's scratch space.
template <typename T, typename index_t>
void attend_mla(T* out, int64_t o_head, const T* query, int64_t q_head, const T* cache,
                const MlaShape& sh, const index_t* table, int64_t len, int64_t nh,
                std::vector<float>& buffer) {
  const int64_t w = sh.width, lora = sh.lora, bs = sh.block_size;
  buffer.resize(nh * (w + lora + bs + 2));
  float* q = buffer.data();     // [nh, w], scaled
  float* acc = q + nh * w;      // [nh, lora]
  float* s = acc + nh * lora;   // [nh, bs]: scores, then probabilities
  float* max = s + nh * bs;     // [nh]
  float* total = max + nh;      // [nh]
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t d = 0; d < w; ++d) q[h * w + d] = float(query[h * q_head + d]) * sh.scale;
  std::fill(acc, acc + nh * lora, 0.f);
  std::fill(max, max + nh, -INFINITY);
  std::fill(total, total + nh, 0.f);
  for (int64_t start = 0; start < len; start += bs) {
    const int64_t n = std::min(bs, len - start);
    const T* rows = cache + int64_t(table[start / bs]) * sh.block_stride;
    for (int64_t t0 = 0; t0 < n; t0 += kW)
      for_each_head_tile(nh, [&]<int kG>(int64_t g0) {
        tile_scores<kG>(q + g0 * w, rows + t0 * w, std::min(kW, n - t0), w, s + g0 * bs + t0, bs);
      });
    for (int64_t h = 0; h < nh; ++h) {
      const float factor = softmax_step(s + h * bs, n, max[h], total[h]);
      if (factor != 1.f)
        for (int64_t d = 0; d < lora; ++d) acc[h * lora + d] *= factor;
    }
    for_each_head_tile(nh, [&]<int kG>(int64_t g0) {
      tile_values<kG>(s + g0 * bs, bs, rows, n, w, acc + g0 * lora, lora);
    });
  }
  for (int64_t h = 0; h < nh; ++h) {
    const float inv = total[h] > 0.f ? 1.f / total[h] : 0.f;  // an empty sequence gives 0
    for (int64_t d = 0; d < lora; ++d) out[h * o_head + d] = T(acc[h * lora + d] * inv);
  }
}

// Whole sequences per task when there are enough of them to keep the threads busy, else
// each split into head ranges (every range reads the sequence's rows again). Threads take
// tasks from a shared counter, so sequences of different lengths still balance.
template <typename T, typename index_t>
void paged_attention_mla_impl(const at::Tensor& out, const at::Tensor& query,
                              const T* cache, const MlaShape& sh, const index_t* tables,
                              int64_t table_stride, const index_t* lens) {
  const int64_t seqs = query.size(0), heads = query.size(1);
  const int64_t threads = at::get_num_threads();
  const int64_t want = (2 * threads + seqs - 1) / seqs;  // two tasks per thread
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(heads, want));
  const int64_t per_chunk = (heads + chunks - 1) / chunks;
  const int64_t tasks = seqs * chunks;
  T* o = out.data_ptr<T>();
  const T* q = query.data_ptr<T>();
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(threads, tasks), 1, [&](int64_t, int64_t) {
    std::vector<float> buffer;
    for (int64_t task = next++; task < tasks; task = next++) {
      const int64_t b = task / chunks, h0 = (task % chunks) * per_chunk;
      const int64_t nh = std::min(heads, h0 + per_chunk) - h0;
      if (nh <= 0) continue;
      attend_mla(o + b * out.stride(0) + h0 * out.stride(1), out.stride(1),
                 q + b * query.stride(0) + h0 * query.stride(1), query.stride(1), cache, sh,
                 tables + b * table_stride, int64_t(lens[b]), nh, buffer);
    }
  });
}

void paged_attention_mla(at::Tensor& out, const at::Tensor& query, const at::Tensor& kv_cache,
                         int64_t kv_lora_rank, double scale, const at::Tensor& block_tables,
                         const at::Tensor& seq_lens) {
  TORCH_CHECK(kv_cache.dim() == 3 && kv_cache.stride(2) == 1 &&
                  kv_cache.stride(1) == kv_cache.size(2),
              "paged_attention_mla: kv_cache must be [blocks, block_size, kv_lora_rank + "
              "rope_dim] with dense rows in a block, got ", kv_cache.sizes(), " with strides ",
              kv_cache.strides());
  const int64_t width = kv_cache.size(2), lora = kv_lora_rank;
  TORCH_CHECK(lora > 0 && lora <= width, "paged_attention_mla: kv_lora_rank ", lora,
              " does not fit cache rows of ", width);
  TORCH_CHECK(query.dim() == 3 && query.size(2) == width && query.stride(2) == 1,
              "paged_attention_mla: query must be [seqs, heads, ", width,
              "] with a contiguous last dimension, got ", query.sizes());
  const int64_t seqs = query.size(0), heads = query.size(1);
  TORCH_CHECK(out.dim() == 3 && out.size(0) == seqs && out.size(1) == heads &&
                  out.size(2) == lora && out.stride(2) == 1,
              "paged_attention_mla: out must be [", seqs, ", ", heads, ", ", lora,
              "] with a contiguous last dimension, got ", out.sizes());
  TORCH_CHECK(query.scalar_type() == kv_cache.scalar_type() &&
                  out.scalar_type() == kv_cache.scalar_type(),
              "paged_attention_mla: out, query and kv_cache dtypes differ");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) >= seqs,
              "paged_attention_mla: block_tables must be [seqs, max_blocks]");
  TORCH_CHECK(seq_lens.numel() == seqs, "paged_attention_mla: one length per sequence");
  if (seqs == 0) return;
  const at::Tensor tables = block_tables.contiguous();
  const at::Tensor lens = seq_lens.to(tables.scalar_type()).contiguous();
  const MlaShape shape{kv_cache.size(1), kv_cache.stride(0), width, lora, float(scale)};
  DISPATCH_FLOAT_TYPES(query.scalar_type(), "paged_attention_mla", [&] {
    AT_DISPATCH_INDEX_TYPES(tables.scalar_type(), "paged_attention_mla_index", [&] {
      const index_t* table = tables.data_ptr<index_t>();
      const index_t* len = lens.data_ptr<index_t>();
      const int64_t max_blocks = tables.size(1), blocks = kv_cache.size(0);
      for (int64_t b = 0; b < seqs; ++b) {  // here, not in the kernel's threads
        TORCH_CHECK(len[b] >= 0 && len[b] <= max_blocks * shape.block_size,
                    "paged_attention_mla: sequence ", b, " of length ", len[b],
                    " does not fit its ", max_blocks, " blocks");
        for (int64_t i = 0; i * shape.block_size < len[b]; ++i) {
          const int64_t block = table[b * max_blocks + i];
          TORCH_CHECK(block >= 0 && block < blocks, "paged_attention_mla: sequence ", b,
                      " has block ", block, " of a cache of ", blocks);
        }
      }
      paged_attention_mla_impl<scalar_t, index_t>(out, query, kv_cache.data_ptr<scalar_t>(),
                                                  shape, table, max_blocks, len);
    });
  });
}

// --- MoE -----------------------------------------------------------------------------------

// The expert matmuls run as tiles of R rows x C output channels: R x C dot products over
// the input width at once, from independent accumulators. A tile of kTileRows rows takes
// kTileChannels channels (16 accumulators: with AVX-512, 24 of the 32 vector registers with
// the loads), so each vector loaded serves four FMAs. A single row takes one channel at a
// time: its weights then stream row after row, which a matrix-vector product (that only
// streams) read at 28-30 against 20 GB/s for four rows side by side, in bf16 on this
// project's 2-core EPYC.
constexpr int64_t kTileRows = 4;
constexpr int64_t kTileChannels = 4;
// Output channels per parallel task. All of the expert's rows pass over the task's weight
// rows (32 x width: 128-256 KiB at DeepSeek's widths), which stay in L2 meanwhile.
constexpr int64_t kBlockChannels = 32;

struct MatmulTask {
  int64_t expert, row, rows, channel;  // `rows` rows from `row`, a block from `channel`
};

// out[i, c + j] = x[i, :] . w[c + j, :] for i < R, j < C, c + j < end; x in fp32 with rows
// `in` apart, out with rows `stride` apart. Channels past `end` are computed on the last
// one and not stored, so a block's last tile needs no code of its own.
template <int R, int C, typename T>
void dot_tile(T* out, int64_t stride, const float* x, const T* w, int64_t in, int64_t c,
              int64_t end) {
  const T* wc[C];
  for (int j = 0; j < C; ++j) wc[j] = w + std::min(c + j, end - 1) * in;
  fVec acc[R][C];
  float tail[R][C];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < C; ++j) {
      acc[i][j] = fVec(0.f);
      tail[i][j] = 0.f;
    }
  }
  int64_t k = 0;
  for (; k + kW <= in; k += kW) {
    fVec wv[C];
    for (int j = 0; j < C; ++j) wv[j] = load_f(wc[j] + k);
    for (int i = 0; i < R; ++i) {
      const fVec xv = fVec::loadu(x + i * in + k);
      for (int j = 0; j < C; ++j) acc[i][j] = at::vec::fmadd(xv, wv[j], acc[i][j]);
    }
  }
  for (; k < in; ++k) {
    for (int j = 0; j < C; ++j) {
      const float wk = static_cast<float>(wc[j][k]);
      for (int i = 0; i < R; ++i) tail[i][j] += wk * x[i * in + k];
    }
  }
  const int64_t n = std::min<int64_t>(C, end - c);
  for (int i = 0; i < R; ++i) {
    for (int64_t j = 0; j < n; ++j)
      out[i * stride + c + j] = static_cast<T>(sum(acc[i][j]) + tail[i][j]);
  }
}

// R rows against the channels [c, end), C at a time.
template <int R, int C, typename T>
void tile_pass(T* out, int64_t stride, const float* x, const T* w, int64_t in, int64_t c,
               int64_t end) {
  for (; c < end; c += C) dot_tile<R, C>(out, stride, x, w, in, c, end);
}

// One task: every row tile of the group against the block's channels.
template <typename T>
void matmul_block(T* out, const float* x, const T* w, int64_t in, int64_t channels,
                  const MatmulTask& t) {
  const int64_t end = std::min(t.channel + kBlockChannels, channels);
  for (int64_t r = t.row; r < t.row + t.rows; r += kTileRows) {
    T* o = out + r * channels;
    const float* xr = x + r * in;
    switch (std::min(kTileRows, t.row + t.rows - r)) {
      case 1: tile_pass<1, 1>(o, channels, xr, w, in, t.channel, end); break;
      case 2: tile_pass<2, kTileChannels>(o, channels, xr, w, in, t.channel, end); break;
      case 3: tile_pass<3, kTileChannels>(o, channels, xr, w, in, t.channel, end); break;
      default: tile_pass<kTileRows, kTileChannels>(o, channels, xr, w, in, t.channel, end);
    }
  }
}

template <typename T>
void grouped_matmul_tasks(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                          const std::vector<MatmulTask>& tasks) {
  const at::Tensor x = input.to(at::kFloat).contiguous();
  const int64_t in = input.size(1), channels = weight.size(1);
  const float* xs = x.data_ptr<float>();
  const T* ws = weight.data_ptr<T>();
  T* os = out.data_ptr<T>();
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const MatmulTask& t = tasks[i];
      matmul_block<T>(os, xs, ws + t.expert * channels * in, in, channels, t);
    }
  });
}

// Each expert's rows times its weight: the tiles above, all experts in one parallel pass
// over (expert, block of channels), except bf16 groups of more than kTileRows rows, which
// take one ATen GEMM each: oneDNN's bf16 kernels. On the gate/up matmul of the 512-token
// MoE row of benchmarks/kernels.py, ATen took 123 ms in bf16 against the tiles' 218, but
// 458 in fp32 (MKL) against 268, and 835 in fp16 against 194. The group ends are read on
// the host, so the MoE layer needs neither a loop over experts in Python nor a device sync.
void grouped_matmul(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                    const at::Tensor& group_ends) {
  TORCH_CHECK(input.dim() == 2, "grouped_matmul: input must be [tokens, in], got ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 3 && weight.size(2) == input.size(1),
              "grouped_matmul: weight must be [experts, out, in] with in = ", input.size(1),
              ", got ", weight.sizes());
  const int64_t experts = weight.size(0), rows = input.size(0);
  TORCH_CHECK(group_ends.dim() == 1 && group_ends.numel() == experts &&
                  group_ends.scalar_type() == at::kLong,
              "grouped_matmul: group_ends must be int64 [experts] = [", experts, "]");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == rows && out.size(1) == weight.size(1) &&
                  out.is_contiguous(),
              "grouped_matmul: out must be a dense [", rows, ", ", weight.size(1), "], got ",
              out.sizes());
  TORCH_CHECK(input.scalar_type() == weight.scalar_type() &&
                  out.scalar_type() == weight.scalar_type(),
              "grouped_matmul: out, input and weight dtypes differ");
  const at::Tensor ends = group_ends.contiguous();
  const int64_t* end = ends.data_ptr<int64_t>();
  const at::Tensor w = weight.contiguous();
  const int64_t channels = w.size(1);
  std::vector<MatmulTask> tasks;
  int64_t start = 0;
  for (int64_t e = 0; e < experts; ++e) {
    TORCH_CHECK(end[e] >= start && end[e] <= rows, "grouped_matmul: group_ends must be "
                "non-decreasing and at most ", rows, ", got ", ends);
    const int64_t n = end[e] - start;
    if (n > kTileRows && w.scalar_type() == at::kBFloat16) {
      at::Tensor target = out.narrow(0, start, n);
      at::mm_out(target, input.narrow(0, start, n), w[e].t());
    } else if (n > 0) {
      for (int64_t c = 0; c < channels; c += kBlockChannels) tasks.push_back({e, start, n, c});
    }
    start = end[e];
  }
  if (!tasks.empty()) {
    DISPATCH_FLOAT_TYPES(w.scalar_type(), "grouped_matmul",
                         [&] { grouped_matmul_tasks<scalar_t>(out, input, w, tasks); });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(_C_ascend_compat, CPU, m) {
  m.impl("concat_and_cache_mla", &concat_and_cache_mla);
  m.impl("paged_attention_mla", &paged_attention_mla);
  m.impl("grouped_matmul", &grouped_matmul);
}
