"""Shared pieces of the end-to-end tests: the tiny model, prompts, and running vLLM."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS_DIR, clean_env

MAX_MODEL_LEN = 256
CHUNK = 32  # max_num_batched_tokens: long prompts are prefilled in several steps
BLOCK = 16
PREFIX = "Prefix caching reuses the blocks of prompts that share a beginning. " * 2

# First batch: mixed lengths, a shared prefix, a prompt longer than the chunk size.
FIRST = [
    "The quick brown fox",
    "Once upon a time there was a small model that generated text.",
    PREFIX + "Greedy decoding",
    PREFIX + "Tensor parallel",
    "Numbers like 1 2 3 4 5 6 7 8 9 10 and words like alpha beta gamma. " * 3,
    "A",
]
# Second batch: reuses the first batch's cached prefix while prefilling in chunks.
SECOND = [PREFIX + "Chunked prefill splits long prompts", PREFIX + "Greedy decoding"]
# Reaches the model length (EOS ignored): the prompt plus max_tokens exceed MAX_MODEL_LEN.
LONG = ["Ascend NPUs run large language models with vLLM. " * 12]
MAX_TOKENS = 200

LLM_ARGS: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": MAX_MODEL_LEN,
    "enable_prefix_caching": True,
    "enable_chunked_prefill": True,
    "max_num_batched_tokens": CHUNK,
    "max_num_seqs": 8,  # 0.9.2 requires max_num_seqs <= max_num_batched_tokens
    "block_size": BLOCK,
    "seed": 0,
    "disable_log_stats": False,  # the prefix-cache counters are read back
}


# The greedy batches every engine run generates (their tokens are compared across runs).
GREEDY = [
    {"prompts": FIRST, "sampling": {"ignore_eos": False}},
    {"prompts": SECOND, "sampling": {"ignore_eos": False}},
    {"prompts": LONG, "sampling": {"ignore_eos": True}},
]
# Sampling outputs checked against HF on the same engine run: the top-5 logprobs of each
# generated token and of each prompt token, and beam search.
TOP_LOGPROBS = 5
LOGPROBS = {
    "prompts": FIRST[:3],
    "sampling": {
        "max_tokens": 8,
        "ignore_eos": True,
        "logprobs": TOP_LOGPROBS,
        "prompt_logprobs": TOP_LOGPROBS,
    },
}
# length_penalty 0 ranks beams by their summed logprob, as HF does while no beam has
# finished; vLLM's default divides by the length, which differs for a beam ending in EOS.
BEAM = {"beam_width": 3, "max_tokens": 8, "ignore_eos": True, "length_penalty": 0.0}
BEAM_SEARCH = {"kind": "beam_search", "prompts": FIRST[:2], "beam": BEAM}


# What switches each mode on for a whole run: CPU mode, or the emulated npu device (its
# torch_npu, on the path of every process through the hook that nox installs).
MODE_ENV = {
    "cpu": {"VLLM_ASCEND_COMPAT_CPU": "1"},
    "npu": {"VLLM_ASCEND_COMPAT_EMULATED_NPU": "1"},
}


IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def launch_spec(
    model: Path,
    tmp: Path,
    batches: list[dict[str, Any]],
    timeout: float = 600,
    env: dict[str, str] | None = None,
    mode: str = "cpu",
    **llm: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``batches`` (see run_llm.py) through the plugin in a fresh process, in CPU mode
    or (``mode="npu"``) in NPU mode on the emulated npu device. The engine core runs in
    that process (one import of vLLM instead of two, the larger part of a tiny model's
    run) in CPU mode, unless ``env`` sets VLLM_ENABLE_V1_MULTIPROCESSING, the run is
    pipeline parallel (0.9's in-process engine cannot take the executor's future outputs)
    or on Ray (in process, 0.27.1's driver dies at exit: Ray's "Cannot find an actor
    handle"). NPU mode keeps the engine core process: in process, 0.33.0 crashes (SIGSEGV)
    at exit on the emulated device. ``vllm serve`` and the tp1 reference run keep vLLM's own
    multiprocess default."""
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({
        "model": str(model), "batches": batches, "max_tokens": MAX_TOKENS,
        "llm": {**LLM_ARGS, **llm},
    }))  # fmt: skip
    own_process = (
        mode != "cpu"
        or llm.get("pipeline_parallel_size", 1) > 1
        or llm.get("distributed_executor_backend") == "ray"
    )
    in_process = {} if own_process else IN_PROCESS
    return subprocess.run(
        [sys.executable, str(TESTS_DIR / "run_llm.py"), str(spec)],
        capture_output=True, text=True, timeout=timeout, cwd=tmp,
        env=clean_env(**MODE_ENV[mode], HF_HUB_OFFLINE="1", **{**in_process, **(env or {})}),
    )  # fmt: skip


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    """The RESULT line of a run that exited 0, with its log; None for a failed run."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return None
    return {**json.loads(lines[-1][len("RESULT ") :]), "log": proc.stdout + proc.stderr}


def run_spec(
    model: Path,
    tmp: Path,
    batches: list[dict[str, Any]],
    timeout: float = 600,
    mode: str = "cpu",
    env: dict[str, str] | None = None,
    **llm: Any,
) -> dict[str, Any]:
    """:func:`launch_spec`, which must succeed: its result and log."""
    proc = launch_spec(model, tmp, batches, timeout, env, mode, **llm)
    result = result_of(proc)
    assert result, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return result


def run_llm(
    model: Path, tmp: Path, timeout: float = 600, env: dict[str, str] | None = None, **llm: Any
) -> dict[str, Any]:
    """The greedy batches (FIRST, SECOND, LONG), then the logprobs and beam-search batches."""
    return run_spec(model, tmp, [*GREEDY, LOGPROBS, BEAM_SEARCH], timeout, env=env, **llm)


def greedy_tokens(run: dict[str, Any]) -> list[list[int]]:
    """The tokens of the greedy batches of ``run``, prompt by prompt (FIRST + SECOND + LONG)."""
    return [out["tokens"] for batch in run["batches"][: len(GREEDY)] for out in batch]


LOGPROB_TOLERANCE = 1e-4  # float32 logprobs, absolute


def _check_position(hf_row: Any, got: list[list[float]], where: str) -> int:
    """One position's returned [token, logprob, rank] rows against HF's distribution:
    each value and rank, and the top-k set. Returns the number of values compared."""
    import torch

    assert got, f"{where}: no logprobs returned"
    top = {int(t) for t in torch.topk(hf_row, TOP_LOGPROBS).indices}
    ranked = {int(token) for token, _, rank in got if rank <= TOP_LOGPROBS}
    assert ranked == top, f"{where}: top-{TOP_LOGPROBS} {sorted(ranked)} vs HF {sorted(top)}"
    for token, logprob, rank in got:
        expected = float(hf_row[int(token)])
        assert abs(logprob - expected) <= LOGPROB_TOLERANCE, (
            f"{where}: {token} {logprob} vs HF {expected}"
        )
        hf_rank = 1 + int((hf_row > hf_row[int(token)]).sum())
        assert rank == hf_rank, f"{where}: token {token} rank {rank} vs HF {hf_rank}"
    return len(got)


def assert_logprobs_equal_hf(outputs: list[dict[str, Any]], model: Path) -> int:
    """The LOGPROBS batch's outputs against log_softmax of HF's float32 logits: every sampled
    and prompt position, once each. Returns the number of values compared."""
    from oracles import hf_log_softmax

    assert len(outputs) == len(LOGPROBS["prompts"])
    sequences = [out["prompt_token_ids"] + out["tokens"] for out in outputs]
    compared = 0
    for out, hf in zip(outputs, hf_log_softmax(model, sequences), strict=True):
        prompt_len = out["prompt_len"]
        assert len(out["logprobs"]) == len(out["tokens"]) == LOGPROBS["sampling"]["max_tokens"]
        for j, (token, got) in enumerate(zip(out["tokens"], out["logprobs"], strict=True)):
            assert token in {int(t) for t, _, _ in got}, f"sampled token {token} not returned"
            compared += _check_position(hf[prompt_len + j - 1], got, f"output position {j}")
        prompt_rows = out["prompt_logprobs"]
        assert len(prompt_rows) == prompt_len and prompt_rows[0] == []  # the first has none
        for i in range(1, prompt_len):
            got = prompt_rows[i]
            assert out["prompt_token_ids"][i] in {int(t) for t, _, _ in got}
            compared += _check_position(hf[i - 1], got, f"prompt position {i}")
    return compared


# --- vllm serve over real HTTP on a loopback port ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(
    model: Path, args: list[str], tmp: Path, mode: str = "cpu", env: dict[str, str] | None = None
) -> Iterator[str]:
    """``vllm serve model *args`` through the plugin (in ``mode``, see :data:`MODE_ENV`, with
    ``env`` added) until it is healthy; yields its base URL, and stops it afterwards. Its log is
    in ``tmp``."""
    with serving(model, args, tmp, mode, env) as (base, _):
        yield base


@contextlib.contextmanager
def serving(
    model: Path, args: list[str], tmp: Path, mode: str = "cpu", env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`serve`, yielding the server process too."""
    port = free_port()
    log = tmp / "vllm-serve.log"
    command = [
        str(Path(sys.executable).with_name("vllm")), "serve", str(model),
        "--host", "127.0.0.1", "--port", str(port), *args,
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT,
            env=clean_env(**MODE_ENV[mode], HF_HUB_OFFLINE="1", **(env or {})),
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not become healthy:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post(base: str, path: str, body: Any, raw: bytes | None = None) -> tuple[int, bytes]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def token_ids(entries: list[str]) -> list[int]:
    """Tokens as returned with return_tokens_as_token_ids: 'token_id:123'."""
    return [int(entry.rpartition(":")[2]) for entry in entries]


def events(payload: bytes) -> Iterator[dict[str, Any]]:
    lines = payload.decode().splitlines()
    assert lines and any(line == "data: [DONE]" for line in lines), payload[:300]
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: ") :])


def assert_streamed_chat_arrives(base: str, max_tokens: int) -> None:
    """A streamed chat on the server at ``base`` answers 200, arrives in at least two pieces
    of content and ends with a finish reason."""
    chat = {
        "model": "tiny", "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": max_tokens, "temperature": 0, "stream": True,
    }  # fmt: skip
    status, payload = post(base, "/v1/chat/completions", chat)
    assert status == 200, payload
    chunks = list(events(payload))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert sum(1 for p in pieces if p) >= 2, chunks
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop"), chunks[-1]
