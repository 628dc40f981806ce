"""Quantization "ascend" reading msModelSlim's description: each linear layer's scheme,
fused layers through packed_modules_mapping, the errors that name the layer, and
``--quantization ascend`` on vLLM's command line. Each case in a fresh interpreter."""

from __future__ import annotations

import textwrap

import pytest
from conftest import check_python

pytestmark = pytest.mark.usefixtures("vllm_release")

CONFIG = """
from vllm_ascend_compat import plugin, quantization
plugin.general_plugin()
from vllm.model_executor.layers.quantization import get_quantization_config
config = get_quantization_config("ascend").from_config({
    "version": "1.0.0", "model_quant_type": "W8A8", "metadata": {},
    "model.layers.0.self_attn.q_proj.weight": "W8A8",
    "model.layers.0.self_attn.k_proj.weight": "W8A8",
    "model.layers.0.self_attn.v_proj.weight": "W8A8",
    "model.layers.0.self_attn.o_proj.weight": "W8A8_DYNAMIC",
    "model.layers.0.mlp.gate_proj.weight": "W8A16",
    "model.layers.0.mlp.up_proj.weight": "FLOAT",
    "model.layers.0.mlp.down_proj.weight": "W4A8_DYNAMIC",
    "model.layers.1.mlp.gate_proj.weight": "FLOAT",
    "model.layers.1.mlp.up_proj.weight": "FLOAT",
})
config.packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"],
                                 "gate_up_proj": ["gate_proj", "up_proj"]}

def error(prefix):
    try:
        config.linear_method(prefix)
    except ValueError as err:
        return str(err)
    raise AssertionError(f"{prefix}: no error")
"""


def test_each_layer_gets_its_scheme_and_fused_layers_their_shards() -> None:
    check_python(
        CONFIG
        + textwrap.dedent("""
        method = lambda prefix: type(config.linear_method(prefix)).__name__
        assert quantization.AscendQuantConfig.get_config_filenames() == [quantization.DESCRIPTION]
        assert method("model.layers.0.self_attn.qkv_proj") == "AscendW8A8LinearMethod"
        assert method("model.layers.0.self_attn.o_proj") == "AscendW8A8DynamicLinearMethod"
        assert method("model.layers.1.mlp.gate_up_proj") == "UnquantizedLinearMethod"
        """),
        VLLM_ASCEND_COMPAT_CPU="1",
    )


def test_errors_name_the_layer() -> None:
    check_python(
        CONFIG
        + textwrap.dedent("""
        mixed = error("model.layers.0.mlp.gate_up_proj")
        assert "model.layers.0.mlp.gate_up_proj fuses shards with different schemes" in mixed
        assert "'model.layers.0.mlp.gate_proj.weight': 'W8A16'" in mixed, mixed
        unknown = error("model.layers.0.mlp.down_proj")
        assert "layer model.layers.0.mlp.down_proj has scheme 'W4A8_DYNAMIC'" in unknown
        assert "W8A8_DYNAMIC" in unknown, unknown
        missing = error("model.layers.1.self_attn.o_proj")
        assert "model.layers.1.self_attn.o_proj.weight" in missing, missing
        """),
        VLLM_ASCEND_COMPAT_CPU="1",
    )


def test_quantization_ascend_parses_on_the_command_line() -> None:
    """With the parser ``vllm serve`` builds (AsyncEngineArgs'), which loads the general
    plugins and hands the parser to the platform: 0.9 and 0.11 list fixed choices."""
    check_python(
        """
        from vllm.engine.arg_utils import AsyncEngineArgs
        try:
            from vllm.utils.argparse_utils import FlexibleArgumentParser
        except ImportError:  # before 0.12
            from vllm.utils import FlexibleArgumentParser
        parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
        args = parser.parse_args(["--model", "m", "--quantization", "ascend"])
        assert AsyncEngineArgs.from_cli_args(args).quantization == "ascend"
        """,
        VLLM_ASCEND_COMPAT_CPU="1",
    )
