"""``vllm serve`` through the plugin in CPU mode, over real HTTP on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from e2e import BLOCK, CHUNK, FIRST, MAX_MODEL_LEN, SECOND, events, post, serve, token_ids
from packaging.version import Version

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.feature("server"),
    pytest.mark.usefixtures("vllm_release"),
]

MODEL = "tiny"
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = [
        "--served-model-name", MODEL, "--dtype", "float32", "--max-model-len",
        str(MAX_MODEL_LEN), "--seed", "0", "--enable-prefix-caching", "--enable-chunked-prefill",
        "--max-num-batched-tokens", str(CHUNK), "--block-size", str(BLOCK), "--max-num-seqs", "8",
    ]  # fmt: skip
    with serve(tiny_model, args, tmp_path_factory.mktemp("server")) as base:
        yield base


def _completion(base: str, prompt: str, stream: bool = False) -> tuple[list[int], str]:
    body = {
        "model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
        "logprobs": 0, "return_tokens_as_token_ids": True, "stream": stream,
    }  # fmt: skip
    status, payload = post(base, "/v1/completions", body)
    assert status == 200, payload
    if not stream:
        choice = json.loads(payload)["choices"][0]
        return token_ids(choice["logprobs"]["tokens"]), choice["text"]
    tokens: list[int] = []
    text = ""
    for chunk in events(payload):
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


@pytest.mark.parametrize(
    ("name", "body", "raw", "status"),
    [
        ("bad json", None, b'{"model": "tiny", "prompt": ', 400),
        ("negative max_tokens", {"model": MODEL, "prompt": "hi", "max_tokens": -1}, None, 400),
        ("unknown model", {"model": "nope", "prompt": "hi", "max_tokens": 4}, None, 404),
        ("prompt too long", {"model": MODEL, "prompt": "hello " * 400, "max_tokens": 4}, None, 400),
    ],
)
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(
    server: str, tp1: dict[str, Any], name: str, body: Any, raw: bytes | None, status: int
) -> None:
    got, payload = post(server, "/v1/completions", body, raw=raw)
    assert got == status, (name, got, payload[:300])
    assert _completion(server, FIRST[0])[0] == _offline(tp1, FIRST[0])


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
