"""vLLM's Ray executor through the plugin in CPU mode: TP=2 on a local Ray instance equals TP=1.

The test starts its own single-node Ray instance (``ray start --head``) in CPU mode and
declares two ``NPU`` resources on it: the platform's ``ray_device_key``, which vLLM's
placement group asks one of per worker (on an Ascend machine Ray detects them itself).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env
from e2e import GREEDY, free_port, greedy_tokens, run_spec

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("vllm_release")]

WORLD = 2


def _ray(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"ray {args[0]}: exit {proc.returncode}\n{output}"
    return output


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """A local Ray head: 2 CPUs, 2 NPU slots, no dashboard, a small object store.

    Its workers (vLLM's worker actors) inherit CPU mode from the raylet's environment;
    the engine reaches the instance through RAY_ADDRESS. Ray blanks CUDA_VISIBLE_DEVICES
    in actors that hold no GPU, which vLLM reads as "a Ray worker before CUDA is up" and
    so keeps Triton (installed with xgrammar) on a node with no CUDA driver, unlike the
    multiprocessing workers: NOSET keeps Ray from blanking it, as on an Ascend node.
    """
    pytest.importorskip("ray", reason="the Ray executor needs ray installed")
    # a short root: Ray's unix sockets live below it and their paths are length-limited
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    address = f"127.0.0.1:{free_port()}"
    env = clean_env(
        VLLM_ASCEND_COMPAT_CPU="1",
        HF_HUB_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES="1",
    )
    started = time.perf_counter()
    _ray(
        "start", "--head", f"--port={address.split(':')[1]}", "--node-ip-address=127.0.0.1",
        f"--num-cpus={WORLD}", f'--resources={{"NPU": {WORLD}}}', "--include-dashboard=false",
        f"--object-store-memory={256 * 2**20}", f"--temp-dir={temp}", "--disable-usage-stats",
        env=env,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_ADDRESS", address)  # run_spec's engine process inherits it
            yield {"address": address, "start_seconds": seconds}
    finally:
        _ray("stop", "--force", env={**env, "RAY_ADDRESS": address})
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.feature("ray")
def test_ray_tensor_parallel_2_equals_tp1(
    tp1: dict[str, Any], tiny_model: Path, tmp_path: Path, ray_cluster: dict[str, Any]
) -> None:
    tp2 = run_spec(
        tiny_model, tmp_path, GREEDY, tensor_parallel_size=WORLD, distributed_executor_backend="ray"
    )
    print(f"ray start {ray_cluster['start_seconds']:.1f}s, "
          f"engine start {tp2['engine_start_seconds']:.1f}s")  # fmt: skip
    (tmp_path / "engine.log").write_text(tp2["log"])
    assert greedy_tokens(tp2) == greedy_tokens(tp1)
    # the plugin's worker ran inside Ray's worker actors: Ray prefixes what an actor logs
    # with its class (RayWorkerWrapper; RayWorkerProc under RayExecutorV2, default from 0.23)
    in_actors = re.findall(r"\(\w*Ray\w* pid=\d+\).*vllm-ascend-compat worker on", tp2["log"])
    assert in_actors, f"no plugin worker in a Ray actor; see {tmp_path / 'engine.log'}"
