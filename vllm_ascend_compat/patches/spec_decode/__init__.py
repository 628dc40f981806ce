"""Speculative decoding on the V1 GPU model runner, without Triton and without CUDA streams.

With any speculative method (ngram among them) vLLM verifies the drafts in
``vllm.v1.sample.rejection_sampler`` with Triton kernels; Ascend has no Triton.
Torch implementations take their place, launched the way each release launches
the kernel, so vLLM's host code (random draws, metadata) stays its own. From 0.14
the runner also copies draft ids to the host on a CUDA side stream.
"""

from vllm_ascend_compat.patching import Kind, Patch, Phase

MODULE = "vllm.v1.sample.rejection_sampler"
REMOVE_WHEN = "vLLM's rejection sampler runs without Triton, or Ascend gains Triton"


def _reason(what: str) -> str:
    return (
        f"Speculative decoding verifies the drafts with vLLM's rejection sampler, which "
        f"{what} with a Triton kernel; Ascend has no Triton. A torch implementation of the "
        f"kernel's semantics takes its place."
    )


GREEDY = _reason(
    "keeps each greedy request's target argmax up to the first draft that differs, plus "
    "the bonus token when all drafts match,"
)
RANDOM = _reason("accepts or rejects each draft of a sampled request")
EXPAND = _reason("spreads per-request sampling parameters over the draft tokens")
RECOVERED = _reason("samples the token that replaces a rejected draft")

_GREEDY_SIG = (
    "output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr, target_argmax_ptr, "
    "bonus_token_ids_ptr, is_greedy_ptr, max_spec_len"
)
_RANDOM_SIG = (
    "output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr, draft_probs_ptr, "
    "target_probs_ptr, bonus_token_ids_ptr, recovered_token_ids_ptr, uniform_probs_ptr, "
    "is_greedy_ptr, max_spec_len, vocab_size"
)
_RECOVERED_SIG = (
    "output_token_ids_ptr, cu_num_draft_tokens_ptr, draft_token_ids_ptr, draft_probs_ptr, "
    "target_probs_ptr, inv_q_ptr, vocab_size, BLOCK_SIZE, NO_DRAFT_PROBS"
)
SIGNATURES = {
    "greedy": f"({_GREEDY_SIG})",
    "greedy-synthetic": (
        f"({_GREEDY_SIG}, uniform_probs_ptr, synthetic_conditional_rates_ptr, SYNTHETIC_MODE)"
    ),
    "random": f"({_RANDOM_SIG}, NO_DRAFT_PROBS)",
    "random-synthetic": f"({_RANDOM_SIG}, synthetic_conditional_rates_ptr, NO_DRAFT_PROBS, "
    "SYNTHETIC_MODE)",
    "expand": "(output_ptr, input_ptr, cu_num_tokens_ptr, replace_from, replace_to, "
    "MAX_NUM_TOKENS)",
    "recovered-inv-q": f"({_RECOVERED_SIG})",
    "recovered-fp64": f"({_RECOVERED_SIG}, USE_FP64_GUMBEL)",
}
LAUNCHER = " From 0.30 the kernel sits in a warm-up dispatcher, whose kernel is replaced."


def _patch(
    patch_id: str,
    target: str,
    versions: str,
    impl: str,
    reason: str,
    signature: str,
    needs: str | None = None,
) -> Patch:
    return Patch(
        id=patch_id,
        target=f"{MODULE}:{target}",
        versions=versions,
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.{impl}",
        reason=reason,
        upstream="NPU only",
        remove_when=REMOVE_WHEN,
        signature=signature,
        needs=needs,
    )


PATCHES: tuple[Patch, ...] = (
    # greedy verification: the hot path of greedy speculative decoding
    _patch(
        "torch-rejection-greedy", "rejection_greedy_sample_kernel", "<0.20.0",
        "before_0_20:torch_greedy_sample", GREEDY, SIGNATURES["greedy"],
    ),
    _patch(
        "torch-rejection-greedy-synthetic", "rejection_greedy_sample_kernel",
        ">=0.20.0,<0.30.0", "before_0_30:torch_greedy_sample",
        GREEDY + " From 0.20 it also takes the synthetic-acceptance inputs.",
        SIGNATURES["greedy-synthetic"],
    ),
    _patch(
        "torch-rejection-greedy-launcher", "_rejection_greedy_sample.kernel",
        ">=0.30.0", "since_0_30:torch_greedy_sample", GREEDY + LAUNCHER,
        SIGNATURES["greedy-synthetic"],
    ),
    # random verification
    _patch(
        "torch-rejection-random", "rejection_random_sample_kernel", "<0.20.0",
        "before_0_20:torch_random_sample", RANDOM, SIGNATURES["random"],
    ),
    _patch(
        "torch-rejection-random-synthetic", "rejection_random_sample_kernel",
        ">=0.20.0,<0.30.0", "before_0_30:torch_random_sample",
        RANDOM + " From 0.20 it also takes the synthetic-acceptance inputs.",
        SIGNATURES["random-synthetic"],
    ),
    _patch(
        "torch-rejection-random-launcher", "_rejection_random_sample.kernel",
        ">=0.30.0", "since_0_30:torch_random_sample", RANDOM + LAUNCHER,
        SIGNATURES["random-synthetic"],
    ),
    # per-request parameters (temperature, top-k, top-p) over draft tokens
    _patch(
        "torch-rejection-expand", "expand_kernel", "<0.30.0",
        "before_0_30:torch_expand", EXPAND, SIGNATURES["expand"],
    ),
    _patch(
        "torch-rejection-expand-launcher", "_expand.kernel", ">=0.30.0",
        "since_0_30:torch_expand", EXPAND + LAUNCHER, SIGNATURES["expand"],
    ),
    # recovered tokens for rejected drafts of sampled requests
    _patch(
        "torch-recovered-tokens", "sample_recovered_tokens", "<0.17.0",
        "before_0_17:torch_sample_recovered_tokens",
        RECOVERED + " Before 0.17 the host function itself calls triton.next_power_of_2, "
        "which vLLM's Triton placeholder lacks, so the function is replaced.",
        "(max_spec_len, num_draft_tokens, cu_num_draft_tokens, draft_token_ids, draft_probs, "
        "target_probs, sampling_metadata, device)",
        "triton.next_power_of_2",
    ),
    _patch(
        "torch-recovered-tokens-inv-q", "sample_recovered_tokens_kernel", ">=0.17.0,<0.23.0",
        "before_0_23:torch_recovered_tokens", RECOVERED, SIGNATURES["recovered-inv-q"],
    ),
    _patch(
        "torch-recovered-tokens-fp64", "sample_recovered_tokens_kernel", ">=0.23.0,<0.30.0",
        "before_0_30:torch_recovered_tokens",
        RECOVERED + " From 0.23 the Gumbel noise may be float64.", SIGNATURES["recovered-fp64"],
    ),
    _patch(
        "torch-recovered-tokens-launcher", "_sample_recovered_tokens.kernel",
        ">=0.30.0", "since_0_30:torch_recovered_tokens", RECOVERED + LAUNCHER,
        SIGNATURES["recovered-fp64"],
    ),
)  # fmt: skip

DRAFT_COPY = (
    "When the drafter cannot run (a request near max_model_len) the GPU model runner zeroes "
    "the drafts and copies them to the host on a side stream through torch.cuda.current_stream() "
    "and torch.cuda.stream(), which exist on neither the NPU nor the CPU. The copy is made on "
    "the current stream instead, as vLLM's own CPU runner does."
)
RUNNER = "vllm.v1.worker.gpu_model_runner:GPUModelRunner._copy_draft_token_ids_to_cpu"

PATCHES += (
    Patch(
        id="host-draft-copy",
        target=RUNNER,
        versions=">=0.14.0,<0.24.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.before_0_24:host_draft_copy",
        reason=DRAFT_COPY,
        upstream="NPU only",
        remove_when="vLLM's runner copies drafts through the device-generic stream API",
        signature="(self, scheduler_output, zeros_only)",
        needs="torch.cuda.stream(",
    ),
    Patch(
        id="host-draft-copy-2d",
        target=RUNNER,
        versions=">=0.24.0",
        phase=Phase.EVERY_PROCESS,
        kind=Kind.REPLACE,
        impl=f"{__name__}.since_0_24:host_draft_copy",
        reason=DRAFT_COPY + " From 0.24 the copy is a 2-D slice and records the draft width.",
        upstream="NPU only",
        remove_when="vLLM's runner copies drafts through the device-generic stream API",
        signature="(self, scheduler_output, zeros_only)",
        needs="torch.cuda.stream(",
    ),
)
