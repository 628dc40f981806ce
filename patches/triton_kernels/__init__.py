"""Triton kernels in vLLM's input preparation, which an NPU (and the CPU mode) cannot run."""

from vllm_ascend_compat.patching import Kind, Patch, Phase

PATCHES = (
    Patch(
        id="torch-slot-mapping",
        target="vllm.v1.worker.block_table:_compute_slot_mapping_kernel",
        versions=">=0.23.0,<0.27.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_27:torch_slot_mapping",
        reason=(
            "vLLM's GPU model runner computes the KV-cache slot of every scheduled token "
            "with a Triton kernel; Ascend has no Triton. A torch implementation takes its "
            "place (its signature gains two block-size parameters in 0.27)."
        ),
        upstream="NPU only",
        remove_when="vLLM computes slot mappings without Triton, or Ascend gains Triton",
        signature=(
            "(num_tokens, max_num_tokens, query_start_loc_ptr, positions_ptr, "
            "block_table_ptr, block_table_stride, block_size, slot_mapping_ptr, "
            "TOTAL_CP_WORLD_SIZE, TOTAL_CP_RANK, CP_KV_CACHE_INTERLEAVE_SIZE, PAD_ID, "
            "BLOCK_SIZE)"
        ),
    ),
)
