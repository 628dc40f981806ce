"""The hostile-input corpus: requests a public vLLM server must refuse with a 4xx that names
the problem, and survive (the tests send a normal request next, and one beside each).

Each case is (name, path, body, names): ``body`` is the JSON value to send, or ``bytes`` to
send as they are; ``names`` is a word the error message must contain (case-insensitive).
The served model is ``tiny`` (vocabulary 512, context 256 tokens: tests/e2e.py).
"""

from __future__ import annotations

from typing import Any

from vllm_ascend_compat import envs

MODEL = "tiny"
VOCAB = 512
COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
BASE: dict[str, Any] = {"model": MODEL, "prompt": "hi", "max_tokens": 4}
CHAT_BASE: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
}
# The plugin refuses a request body above this many bytes (413).
MAX_BODY_BYTES = envs.DEFAULT_MAX_BODY_BYTES
# A valid request, padded past the limit with a field vLLM ignores.
OVERSIZED = b'{"model": "tiny", "prompt": "hi", "max_tokens": 4, "padding": "%s"}' % (
    b"a" * MAX_BODY_BYTES
)


def spliced(**fields: str) -> bytes:
    """A completions body with ``fields`` spliced in as raw JSON text (NaN, Infinity)."""
    extra = "".join(f', "{k}": {v}' for k, v in fields.items())
    return f'{{"model": "{MODEL}", "prompt": "hi", "max_tokens": 4{extra}}}'.encode()


def _structured(kind: str, value: str) -> dict[str, Any]:
    """A structured-output request in both spellings: ``guided_<kind>`` (up to 0.17) and
    ``structured_outputs`` (from 0.11 on); each release ignores the one it does not know."""
    return {**BASE, f"guided_{kind}": value, "structured_outputs": {kind: value}}


def _json_schema(schema: Any) -> dict[str, Any]:
    return {**CHAT_BASE, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}  # fmt: skip


CASES: list[tuple[str, str, Any, str]] = [
    # the body itself
    ("truncated JSON", COMPLETIONS, b'{"model": "tiny", "prompt": ', "json"),
    ("not JSON", COMPLETIONS, b"model=tiny&prompt=hi", "json"),
    ("a JSON array", COMPLETIONS, [1, 2, 3], "object"),
    ("JSON null", COMPLETIONS, None, "object"),
    ("a JSON number", COMPLETIONS, 42, "object"),
    ("a JSON string", CHAT, "hi", "object"),
    ("a JSON array to chat", CHAT, [CHAT_BASE], "object"),
    ("an oversized body", COMPLETIONS, OVERSIZED, "larger than"),
    # token ids in the prompt
    ("a negative prompt token id", COMPLETIONS, {**BASE, "prompt": [-1]}, "token"),
    ("an out-of-vocab prompt token id", COMPLETIONS, {**BASE, "prompt": [VOCAB + 7]}, "token"),
    ("a batch with a negative token id", COMPLETIONS, {**BASE, "prompt": [[5], [-3]]}, "token"),
    # lengths
    ("max_tokens 10**9", COMPLETIONS, {**BASE, "max_tokens": 10**9}, "max_tokens"),
    ("negative max_tokens", COMPLETIONS, {**BASE, "max_tokens": -1}, "max_tokens"),
    ("chat max_tokens 10**9", CHAT, {**CHAT_BASE, "max_tokens": 10**9}, "max_tokens"),
    ("an over-long prompt", COMPLETIONS, {**BASE, "prompt": "hello " * 400}, "context length"),
    ("min_tokens above max_tokens", COMPLETIONS, {**BASE, "min_tokens": 9}, "min_tokens"),
    # sampling parameters: out of range, negative, NaN, infinite
    ("negative temperature", COMPLETIONS, {**BASE, "temperature": -1}, "temperature"),
    ("NaN temperature", COMPLETIONS, spliced(temperature="NaN"), "temperature"),
    ("infinite temperature", COMPLETIONS, spliced(temperature="Infinity"), "temperature"),
    ("top_p 0", COMPLETIONS, {**BASE, "top_p": 0}, "top_p"),
    ("top_p above 1", COMPLETIONS, {**BASE, "top_p": 1.5}, "top_p"),
    ("NaN top_p", COMPLETIONS, spliced(top_p="NaN"), "top_p"),
    ("top_k -5", COMPLETIONS, {**BASE, "top_k": -5}, "top_k"),
    ("min_p above 1", COMPLETIONS, {**BASE, "min_p": 2}, "min_p"),
    ("presence_penalty 5", COMPLETIONS, {**BASE, "presence_penalty": 5}, "presence_penalty"),
    ("NaN frequency_penalty", COMPLETIONS, spliced(frequency_penalty="NaN"), "frequency_penalty"),
    ("repetition_penalty 0", COMPLETIONS, {**BASE, "repetition_penalty": 0}, "repetition_penalty"),
    ("NaN repetition_penalty", COMPLETIONS, spliced(repetition_penalty="NaN"), "repetition"),
    ("n 0", COMPLETIONS, {**BASE, "n": 0}, "n"),
    ("negative logprobs", COMPLETIONS, {**BASE, "logprobs": -1}, "logprobs"),
    ("logprobs 1000", COMPLETIONS, {**BASE, "logprobs": 1000}, "logprobs"),
    ("a string temperature", COMPLETIONS, {**BASE, "temperature": "hot"}, "temperature"),
    # token ids in stop_token_ids and logit_bias
    ("a negative stop token id", COMPLETIONS, {**BASE, "stop_token_ids": [-1]}, "stop_token_ids"),
    ("an out-of-vocab stop token id with min_tokens", COMPLETIONS,
     {**BASE, "min_tokens": 2, "stop_token_ids": [VOCAB + 7]}, "stop_token_ids"),
    ("a negative logit_bias token", COMPLETIONS, {**BASE, "logit_bias": {"-1": 5}}, "logit_bias"),
    ("an out-of-vocab logit_bias token", COMPLETIONS,
     {**BASE, "logit_bias": {str(VOCAB + 7): 5}}, "logit_bias"),
    ("a logit_bias key that is no token id", COMPLETIONS,
     {**BASE, "logit_bias": {"fox": 5}}, "logit_bias"),
    ("a NaN logit_bias", COMPLETIONS, spliced(logit_bias='{"5": NaN}'), "logit_bias"),
    # stop lists
    ("an empty stop string", COMPLETIONS, {**BASE, "stop": [""]}, "stop"),
    ("a huge stop list", COMPLETIONS, {**BASE, "stop": [f"s{i}" for i in range(100_000)]}, "stop"),
    # structured outputs
    ("an invalid JSON schema", CHAT, _json_schema({"type": "nonsense"}), "nonsense"),
    ("a JSON schema with a dangling $ref", CHAT,
     _json_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}), "missing"),
    ("a JSON schema that is no object", CHAT, _json_schema(42), "json_schema"),
    ("an invalid regex", COMPLETIONS, _structured("regex", "(unclosed"), "regex"),
    ("an invalid grammar", COMPLETIONS, _structured("grammar", "root ::= ("), "grammar"),
    # chat messages
    ("messages not a list", CHAT, {**CHAT_BASE, "messages": "hi"}, "messages"),
    ("a message without a role", CHAT, {**CHAT_BASE, "messages": [{"content": "hi"}]}, "role"),
]  # fmt: skip
# Valid inputs that look hostile: each must be served (200).
ACCEPTED: list[tuple[str, str, Any]] = [
    ("an empty stop list", COMPLETIONS, {**BASE, "stop": []}),
    ("an empty stop_token_ids list", COMPLETIONS, {**BASE, "stop_token_ids": []}),
    ("an empty logit_bias", COMPLETIONS, {**BASE, "logit_bias": {}}),
]
