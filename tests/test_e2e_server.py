"""``vllm serve`` through the plugin in CPU mode, over real HTTP on a loopback port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from e2e import (
    BLOCK,
    CHUNK,
    FIRST,
    MAX_MODEL_LEN,
    SECOND,
    events,
    post,
    serve,
    serving,
    token_ids,
)  # fmt: skip
from hostile import ACCEPTED, CASES, COMPLETIONS, OVERSIZED, spliced
from packaging.specifiers import SpecifierSet
from packaging.version import Version

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.feature("server"),
    pytest.mark.usefixtures("vllm_release"),
]

MODEL = "tiny"
MAX_TOKENS = 16


SERVER_ARGS = [
    "--served-model-name", MODEL, "--dtype", "float32", "--max-model-len",
    str(MAX_MODEL_LEN), "--seed", "0", "--enable-prefix-caching", "--enable-chunked-prefill",
    "--max-num-batched-tokens", str(CHUNK), "--block-size", str(BLOCK), "--max-num-seqs", "8",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(tiny_model, SERVER_ARGS, tmp_path_factory.mktemp("server")) as base:
        yield base


def _completion(base: str, prompt: str, stream: bool = False) -> tuple[list[int], str]:
    body = {
        "model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
        "logprobs": 0, "return_tokens_as_token_ids": True, "stream": stream,
    }  # fmt: skip
    return _answer(base, body)


def _answer(base: str, body: dict[str, Any]) -> tuple[list[int], str]:
    """The generated token ids and text of a completions request, streamed or not."""
    status, payload = post(base, "/v1/completions", body)
    assert status == 200, payload
    if not body["stream"]:
        choice = json.loads(payload)["choices"][0]
        return token_ids(choice["logprobs"]["tokens"]), choice["text"]
    tokens: list[int] = []
    text = ""
    for chunk in events(payload):
        assert "choices" in chunk, chunk  # an error event
        for choice in chunk["choices"]:
            text += choice["text"]
            if choice.get("logprobs"):
                tokens += token_ids(choice["logprobs"]["tokens"])
    return tokens, text


def _offline(tp1: dict[str, Any], prompt: str) -> list[int]:
    prompts = FIRST + SECOND
    outputs = tp1["batches"][0] + tp1["batches"][1]
    return outputs[prompts.index(prompt)]["tokens"][:MAX_TOKENS]


@pytest.mark.sweep
@pytest.mark.parametrize("stream", [False, True])
def test_completions_match_the_offline_run(server: str, tp1: dict[str, Any], stream: bool) -> None:
    for prompt in FIRST[:3]:
        tokens, text = _completion(server, prompt, stream=stream)
        assert tokens == _offline(tp1, prompt)
        assert text


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_equal_hf_on_the_chat_template(
    server: str, tiny_model: Path, stream: bool
) -> None:
    from oracles import hf_greedy_ids
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "Tell me about the quick brown fox"}]
    body = {
        "model": MODEL, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0,
        "logprobs": True, "top_logprobs": 0, "return_tokens_as_token_ids": True,
        "stream": stream,
    }  # fmt: skip
    status, payload = post(server, "/v1/chat/completions", body)
    assert status == 200, payload
    if stream:
        entries = [
            item["token"]
            for chunk in events(payload)
            for choice in chunk["choices"]
            if choice.get("logprobs")
            for item in choice["logprobs"]["content"]
        ]
    else:
        choice = json.loads(payload)["choices"][0]
        assert choice["message"]["role"] == "assistant"
        entries = [item["token"] for item in choice["logprobs"]["content"]]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False).input_ids
    assert token_ids(entries) == hf_greedy_ids(tiny_model, [prompt_ids], MAX_TOKENS)[0]


def test_32_concurrent_requests_all_answered_with_the_offline_tokens(
    server: str, tp1: dict[str, Any]
) -> None:
    prompts = [(FIRST + SECOND)[i % len(FIRST + SECOND)] for i in range(32)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda p: _completion(server, p)[0], prompts))
    assert len(results) == 32
    for prompt, tokens in zip(prompts, results, strict=True):
        assert tokens == _offline(tp1, prompt), prompt


LOAD_CLIENTS = 64
LOAD_REQUESTS = 500


def _seeded(i: int) -> tuple[tuple[int, int], dict[str, Any]]:
    """Request ``i`` of the load: one of 8 prompts with one of 4 seeds, every third streamed.
    Requests with the same key (prompt, seed) must generate the same tokens."""
    prompts = FIRST + SECOND
    key = (i % len(prompts), i // len(prompts) % 4)
    body = {
        "model": MODEL, "prompt": prompts[key[0]], "max_tokens": MAX_TOKENS, "temperature": 1.0,
        "seed": key[1], "ignore_eos": True, "logprobs": 0, "return_tokens_as_token_ids": True,
        "stream": i % 3 == 0,
    }  # fmt: skip
    return key, body


def test_500_requests_from_64_clients_none_lost_and_equal_seeds_equal_tokens(
    server: str, record_property: Any
) -> None:
    def one(i: int) -> tuple[int, list[int] | None, float | str]:
        started = time.monotonic()
        try:
            tokens, _ = _answer(server, _seeded(i)[1])
        except (AssertionError, OSError, ValueError) as err:
            return i, None, repr(err)
        return i, tokens, time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=LOAD_CLIENTS) as pool:
        results = list(pool.map(one, range(LOAD_REQUESTS)))
    seconds = time.monotonic() - started
    lost = [(i, error) for i, tokens, error in results if tokens is None]
    latencies = sorted(float(t) for _, tokens, t in results if tokens is not None)
    figures = {
        "answered": len(latencies), "lost": len(lost), "seconds": round(seconds, 1),
        "p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 3) if latencies else None,
    }  # fmt: skip
    record_property("load", json.dumps(figures))
    print("load:", figures)
    assert not lost, (figures, lost[:5])
    by_key: dict[tuple[int, int], set[tuple[int, ...]]] = {}
    for i, tokens, _ in results:
        assert tokens is not None and len(tokens) == MAX_TOKENS
        by_key.setdefault(_seeded(i)[0], set()).add(tuple(tokens))
    assert all(len(outputs) == 1 for outputs in by_key.values()), by_key
    # the seeds matter: one prompt's four seeds give four different outputs
    assert len({next(iter(by_key[(0, seed)])) for seed in range(4)}) == 4


# A hostile request is answered, and a request sent beside it is served, within this bound.
STALL_BOUND_S = 10.0


def _timed(call: Any, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    return call(*args), time.monotonic() - started


@pytest.mark.sweep
@pytest.mark.parametrize(("name", "path", "body", "names"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_request_gets_a_4xx_that_names_it_and_stalls_no_other(
    server: str, tp1: dict[str, Any], name: str, path: str, body: Any, names: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        beside = pool.submit(_timed, _completion, server, FIRST[0])
        (status, payload), seconds = _timed(post, server, path, body, raw)
        (tokens, _), beside_seconds = beside.result()
    assert 400 <= status < 500, (name, status, payload[:300])
    assert names.lower() in payload.decode(errors="replace").lower(), (name, payload[:300])
    assert seconds < STALL_BOUND_S and beside_seconds < STALL_BOUND_S, (seconds, beside_seconds)
    assert tokens == _offline(tp1, FIRST[0])
    assert _completion(server, FIRST[0])[0] == _offline(tp1, FIRST[0])


@pytest.mark.sweep
@pytest.mark.parametrize(("name", "path", "body"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_a_valid_request_that_looks_hostile_is_served(
    server: str, name: str, path: str, body: Any
) -> None:
    status, payload = post(server, path, body)
    assert status == 200, (name, payload[:300])


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
NAN_TEMPERATURE = b'{"model": "tiny", "prompt": "hi", "max_tokens": 4, "temperature": NaN}'


@pytest.mark.parametrize(
    ("name", "path", "body", "raw"),
    [  # fixed upstream in 0.29 / 0.24 / 0.22+0.29, backported by the plugin's patches
        ("oov stop_token_ids with min_tokens", "/v1/completions",
         {"model": MODEL, "prompt": "hi", "max_tokens": 4, "min_tokens": 2,
          "stop_token_ids": [100000]}, None),
        ("NaN temperature", "/v1/completions", None, NAN_TEMPERATURE),
        ("empty bad_words", "/v1/chat/completions", {**CHAT, "bad_words": [""]}, None),
        ("bad_words of spaces", "/v1/chat/completions", {**CHAT, "bad_words": ["   "]}, None),
    ],
)  # fmt: skip
def test_backported_bad_requests_get_400_and_the_server_keeps_serving(
    server: str,
    tp1: dict[str, Any],
    vllm_release: str,
    name: str,
    path: str,
    body: Any,
    raw: bytes | None,
) -> None:
    if "bad_words" in (body or {}) and Version(vllm_release) < Version("0.9.2"):
        pytest.skip(f"vLLM {vllm_release}'s chat API has no bad_words (0.9.2 added it)")
    got, payload = post(server, path, body, raw=raw)
    assert got == 400, (name, got, payload[:300])
    assert _completion(server, FIRST[0])[0] == _offline(tp1, FIRST[0])


# --- SIGTERM in the middle of the load ---

DRAIN_S = 30  # the drain the shutdown test asks for: every request in flight finishes in it
SHUTDOWN_BOUND_S = DRAIN_S + 30.0  # the drain, then the engine's shutdown
SIGTERM_AFTER = 150  # answered requests of the load before the SIGTERM
IN_FLIGHT_MARGIN_S = 0.2


def _drain_option(release: str) -> tuple[list[str], dict[str, str]]:
    """vLLM's --shutdown-timeout from 0.18.0 on; before, the drain-on-sigterm backport's."""
    if Version(release) >= Version("0.18.0"):
        return ["--shutdown-timeout", str(DRAIN_S)], {}
    return [], {"VLLM_ASCEND_COMPAT_SHUTDOWN_TIMEOUT": str(DRAIN_S)}


def _outcome(base: str, i: int) -> str:
    """What request ``i`` of the load got: its full answer, a refusal (a 503, or a
    connection refused or closed), or anything else (lost)."""
    try:
        tokens, _ = _answer(base, _seeded(i)[1])
    except AssertionError as err:
        return "refused" if "503" in str(err)[:40] or "shutting down" in str(err) else repr(err)
    except ConnectionError:  # refused, or closed by a server on its way out
        return "refused"
    except urllib.error.URLError as err:
        return "refused" if isinstance(err.reason, ConnectionError) else repr(err)
    except (OSError, http.client.HTTPException) as err:
        return repr(err)
    return "answered" if len(tokens) == MAX_TOKENS else f"{len(tokens)} tokens"


def _load_with_sigterm(
    base: str, proc: subprocess.Popen[bytes], wait_s: float
) -> tuple[list[tuple[bool, str]], float | None, list[psutil.Process]]:
    """The 500-request load, SIGTERM after :data:`SIGTERM_AFTER` answers; returns each
    request's (in flight at the SIGTERM, outcome), the seconds until the server exited (None:
    not within ``wait_s``), and its processes still running."""
    children = psutil.Process(proc.pid).children(recursive=True)
    answered = threading.Semaphore(0)
    sigterm_at = [float("inf")]

    def one(i: int) -> tuple[float, str]:
        sent = time.monotonic()
        outcome = _outcome(base, i)
        if outcome == "answered":
            answered.release()
        return sent, outcome

    with ThreadPoolExecutor(max_workers=LOAD_CLIENTS) as pool:
        futures = [pool.submit(one, i) for i in range(LOAD_REQUESTS)]
        for _ in range(SIGTERM_AFTER):
            answered.acquire(timeout=120)
        started = sigterm_at[0] = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=wait_s)
            exit_s: float | None = time.monotonic() - started
        except subprocess.TimeoutExpired:
            exit_s = None
            for process in [psutil.Process(proc.pid), *children]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()  # the clients still waiting get their connections reset
        sent = [future.result() for future in futures]
    # in flight: sent before the SIGTERM, by a margin that covers reaching the server
    results = [(t < sigterm_at[0] - IN_FLIGHT_MARGIN_S, outcome) for t, outcome in sent]
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    return results, exit_s, alive


def test_sigterm_in_the_middle_of_the_load_drains_every_request_then_exits(
    tiny_model: Path, tmp_path: Path, vllm_release: str, record_property: Any
) -> None:
    """Every request sent before the SIGTERM gets its whole answer within the drain, later
    ones a 503 or no connection; the server and its engine exit within the bound."""
    options, env = _drain_option(vllm_release)
    with serving(tiny_model, SERVER_ARGS + options, tmp_path, env=env) as (base, proc):
        results, exit_s, alive = _load_with_sigterm(base, proc, SHUTDOWN_BOUND_S)
    in_flight = [outcome for before, outcome in results if before]
    later = [outcome for before, outcome in results if not before]
    figures = {
        "shutdown_s": None if exit_s is None else round(exit_s, 1),
        "in_flight": len(in_flight), "answered": results.count((True, "answered")),
        "after": len(later), "refused_after": later.count("refused"),
    }  # fmt: skip
    record_property("shutdown", json.dumps(figures))
    print("shutdown:", figures)
    assert exit_s is not None, f"no exit {SHUTDOWN_BOUND_S} s after SIGTERM: {figures}"
    assert not alive, alive
    assert set(in_flight) == {"answered"}, figures
    assert set(later) <= {"answered", "refused"}, [o for o in later if o != "refused"][:5]


# --- the reproducers: one server with the serving patches disabled ---

UNPATCHED = (
    "openai-request-guard", "openai-request-guard-launchers", "drain-on-sigterm",
    "drain-before-engine-shutdown", "drain-before-engine-shutdown-launchers",
    "structured-output-errors-are-client-errors",
)  # fmt: skip
LINE = Version(os.environ.get("VLLM_ASCEND_COMPAT_TEST_LINE", "0"))


def _only_on(versions: str, why: str) -> pytest.MarkDecorator:
    """A reproducer that shows its bug on the vLLM lines ``versions`` only, for ``why``."""
    return pytest.mark.skipif(
        not SpecifierSet(versions).contains(LINE), reason=f"only on vLLM {versions}: {why}"
    )


@pytest.fixture(scope="module")
def unpatched(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, vllm_release: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server with every serving patch disabled; the last reproducer stops it (SIGTERM)."""
    options, env = _drain_option(vllm_release)
    env["VLLM_ASCEND_COMPAT_DISABLE_PATCHES"] = ",".join(UNPATCHED)
    tmp = tmp_path_factory.mktemp("unpatched")
    with serving(tiny_model, SERVER_ARGS + options, tmp, env=env) as served:
        yield served


def test_without_the_request_guard_vllm_takes_a_nan_logit_bias_and_any_body_size(
    unpatched: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """The reproducer of openai-request-guard*: every release generates with a NaN
    logit_bias and reads and serves a body past the limit (the corpus above has them on)."""
    base, _ = unpatched
    nan_bias, _ = post(base, COMPLETIONS, None, raw=spliced(logit_bias='{"5": NaN}'))
    oversized, _ = post(base, COMPLETIONS, None, raw=OVERSIZED)
    assert (nan_bias, oversized) == (200, 200)


@_only_on(">=0.27.0,<0.28.0", "the validators' ValueError becomes a 500 (0.28.0 fixed it)")
def test_without_the_backport_an_invalid_json_schema_gets_an_empty_500(
    unpatched: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """The reproducer of structured-output-errors-are-client-errors."""
    base, _ = unpatched
    (case,) = [c for c in CASES if c[0] == "an invalid JSON schema"]
    status, payload = post(base, case[1], case[2])
    assert status == 500 and json.loads(payload)["error"]["message"] == "", payload[:300]


@_only_on("<0.18.0", "from 0.18.0 on vLLM drains the engine itself")
def test_without_the_drain_sigterm_under_load_hangs_the_server(
    unpatched: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """The reproducer of drain-on-sigterm: the server shuts its engine down and then waits
    on the clients it left without an answer."""
    results, exit_s, _ = _load_with_sigterm(*unpatched, 15.0)
    assert exit_s is None
    assert any(before and outcome != "answered" for before, outcome in results)


@_only_on(">=0.18.0,<0.28.0", "uvicorn's own signal handler and vLLM's engine drain both run")
def test_without_the_http_drain_sigterm_under_load_fails_some_request(
    unpatched: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """The reproducer of drain-before-engine-shutdown on 0.18 to 0.27: under the same load
    and SIGTERM as the shutdown test, some request gets neither its answer nor a refusal."""
    results, _, _ = _load_with_sigterm(*unpatched, SHUTDOWN_BOUND_S)
    failed = [o for before, o in results if o != "answered" and (before or o != "refused")]
    assert failed, results


@_only_on(">=0.28.0", "vLLM's HTTP server takes requests during the engine drain")
def test_without_the_http_drain_a_request_during_vllms_engine_drain_gets_a_500(
    unpatched: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """The reproducer of drain-before-engine-shutdown*: from 0.28 vLLM drains the engine on
    SIGTERM while the HTTP server takes requests, and one that arrives then fails."""
    base, proc = unpatched
    long = {"model": MODEL, "prompt": FIRST[0], "max_tokens": 200, "ignore_eos": True}
    with ThreadPoolExecutor(max_workers=8) as pool:
        draining = [pool.submit(post, base, COMPLETIONS, long) for _ in range(8)]
        time.sleep(0.5)  # the 8 are in the engine, for about 2 s more
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, payload = post(base, COMPLETIONS, {**long, "max_tokens": 4})
        assert [future.result()[0] for future in draining] == [200] * 8
    assert status == 500, (status, payload[:300])
