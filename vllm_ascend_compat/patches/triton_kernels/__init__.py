"""Triton kernels in vLLM's input preparation, which an NPU (and the CPU mode) cannot run."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

REASON = (
    "vLLM's GPU model runner computes the KV-cache slot of every scheduled token with a "
    "Triton kernel; Ascend has no Triton. A torch implementation takes its place."
)
REMOVE_WHEN = "vLLM computes slot mappings without Triton, or Ascend gains Triton"

PATCHES = (
    Patch(
        id="torch-slot-mapping",
        target="vllm.v1.worker.block_table:_compute_slot_mapping_kernel",
        versions=">=0.19.0,<0.26.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_26:torch_slot_mapping",
        reason=REASON,
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature=(
            "(num_tokens, max_num_tokens, query_start_loc_ptr, positions_ptr, "
            "block_table_ptr, block_table_stride, block_size, slot_mapping_ptr, "
            "TOTAL_CP_WORLD_SIZE, TOTAL_CP_RANK, CP_KV_CACHE_INTERLEAVE_SIZE, PAD_ID, "
            "BLOCK_SIZE)"
        ),
    ),
    Patch(
        id="torch-slot-mapping-kv-blocks",
        target="vllm.v1.worker.block_table:_compute_slot_mapping_kernel",
        versions=">=0.26.0,<0.29.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_29:torch_slot_mapping",
        reason=REASON + " From 0.26 a KV-cache block may hold several kernel blocks.",
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature=(
            "(num_tokens, max_num_tokens, query_start_loc_ptr, positions_ptr, "
            "block_table_ptr, block_table_stride, block_size, slot_mapping_ptr, "
            "KV_CACHE_BLOCK_SIZE, BLOCKS_PER_KV_BLOCK, TOTAL_CP_WORLD_SIZE, TOTAL_CP_RANK, "
            "CP_KV_CACHE_INTERLEAVE_SIZE, PAD_ID, BLOCK_SIZE)"
        ),
    ),
    Patch(
        id="torch-slot-mapping-kernel-method",
        target="vllm.v1.worker.block_table:ComputeSlotMappingKernel.kernel",
        versions=">=0.29.0,<0.32.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_32:torch_slot_mapping",
        reason=REASON + " From 0.29 the kernel of 0.26 is a static method of a launcher class.",
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature=(
            "(num_tokens, max_num_tokens, query_start_loc_ptr, positions_ptr, "
            "block_table_ptr, block_table_stride, block_size, slot_mapping_ptr, "
            "KV_CACHE_BLOCK_SIZE, BLOCKS_PER_KV_BLOCK, TOTAL_CP_WORLD_SIZE, TOTAL_CP_RANK, "
            "CP_KV_CACHE_INTERLEAVE_SIZE, PAD_ID, BLOCK_SIZE)"
        ),
    ),
    Patch(
        id="torch-slot-mapping-launcher",
        target="vllm.v1.worker.block_table:ComputeSlotMappingKernel.__call__",
        versions=">=0.32.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.since_0_32:torch_slot_mapping",
        reason=REASON + " From 0.32 the launcher's __call__ (one kernel block per KV block) "
        "is replaced.",
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature=(
            "(self, num_reqs, num_tokens, max_num_tokens, query_start_loc, positions, "
            "block_table, block_table_stride, slot_mapping, kv_cache_block_size, "
            "total_cp_world_size, total_cp_rank, cp_kv_cache_interleave_size)"
        ),
    ),
)
