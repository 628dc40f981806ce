"""Structured outputs (JSON schema, regex, choice) through the plugin in CPU mode.

The grammar backend (xgrammar, which every line ships) builds a token bitmask in the
engine core; the plugin's model runner applies it to the logits on the CPU.
A random-weight model ignores any format it is not forced into, so each output that parses
and matches its constraint shows the mask was applied at every step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from e2e import run_spec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.feature("structured-outputs"),
    pytest.mark.usefixtures("vllm_release"),
]

BACKEND = "xgrammar"
SCHEMA = {
    "type": "object",
    "properties": {
        # a pattern, not maxLength: xgrammar's maxLength strings admit raw control characters
        # (its rule is [^"\\\r\n]), which no JSON parser accepts
        "name": {"type": "string", "pattern": "^[a-z]{1,8}$"},
        "age": {"type": "integer"},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}
REGEX = r"[a-z]{2,6}@[a-z]{2,5}\.(com|org)"
CHOICE = ["Ascend", "CPU", "GPU"]
PROMPTS = ["The quick brown fox", "Describe a person:", "A"]
SAMPLING = {"max_tokens": 96}
BATCHES = [
    {"prompts": PROMPTS, "sampling": SAMPLING, "structured": {"json": SCHEMA}},
    {"prompts": PROMPTS, "sampling": SAMPLING, "structured": {"regex": REGEX}},
    {"prompts": PROMPTS, "sampling": SAMPLING, "structured": {"choice": CHOICE}},
    {"prompts": PROMPTS, "sampling": {"max_tokens": 16}},  # the control: no constraint
]


@pytest.fixture(scope="module")
def structured(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, vllm_release: str
) -> dict[str, Any]:
    """One engine start for the constrained batches and the control, on xgrammar.

    JSON without free whitespace: a random model otherwise fills max_tokens with tabs.
    """
    if tuple(map(int, vllm_release.split("."))) < (0, 11):
        config = {
            "guided_decoding_backend": BACKEND,
            "guided_decoding_disable_any_whitespace": True,
        }
    else:
        config = {"structured_outputs_config": {"backend": BACKEND, "disable_any_whitespace": True}}
    return run_spec(tiny_model, tmp_path_factory.mktemp("structured"), BATCHES, **config)


def _texts(run: dict[str, Any], batch: int) -> list[str]:
    outs = run["batches"][batch]
    assert all(o["finish_reason"] == "stop" for o in outs), outs  # the grammar ended each one
    return [o["text"] for o in outs]


def _check_schema(value: Any) -> None:
    """SCHEMA by hand: the keys, their types, the pattern and the enum."""
    assert isinstance(value, dict) and set(value) == set(SCHEMA["required"]), value
    assert isinstance(value["name"], str) and re.fullmatch("[a-z]{1,8}", value["name"]), value
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool), value
    assert value["color"] in SCHEMA["properties"]["color"]["enum"], value


def test_json_schema(structured: dict[str, Any]) -> None:
    texts = _texts(structured, 0)
    print("json:", texts)
    for text in texts:
        _check_schema(json.loads(text))


def test_regex(structured: dict[str, Any]) -> None:
    texts = _texts(structured, 1)
    print("regex:", texts)
    for text in texts:
        assert re.fullmatch(REGEX, text), text


def test_choice(structured: dict[str, Any]) -> None:
    texts = _texts(structured, 2)
    print("choice:", texts)
    assert set(texts) <= set(CHOICE), texts


def test_unconstrained_output_matches_none(structured: dict[str, Any]) -> None:
    """The control: without a grammar the model's text fits none of the constraints."""
    texts = [o["text"] for o in structured["batches"][3]]
    print("unconstrained:", texts)
    for text in texts:
        assert not re.fullmatch(REGEX, text) and text not in CHOICE and not text.startswith("{")
