"""The EMULATED npu device (emulator/): PrivateUse1 renamed ``npu``, tensors in host memory.

These tests check the emulator against the CPU and against what the plugin needs from
``torch.npu``; they say nothing about a real Ascend NPU. Each runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, check_python, clean_env
from e2e import free_port

pytestmark = pytest.mark.release_independent

EMULATOR = REPO_ROOT / "emulator"
SWITCH = "VLLM_ASCEND_COMPAT_EMULATED_NPU"
BUILD_TIMEOUT = 900  # a cold build takes about 20 s alone, longer on a busy machine

# Puts the emulator on sys.path directly (the switch has its own test) and imports it.
PRELUDE = f"""
import sys
sys.path.insert(0, {str(EMULATOR)!r})
import torch
import torch_npu
"""


def _env(**extra: str) -> dict[str, str]:
    """The build cache the caller chose (clean_env drops the plugin's variables)."""
    env = {}
    if "VLLM_ASCEND_COMPAT_CACHE" in os.environ:
        env["VLLM_ASCEND_COMPAT_CACHE"] = os.environ["VLLM_ASCEND_COMPAT_CACHE"]
    env.update(extra)
    return env


def run(code: str, **env: str) -> str:
    return check_python(PRELUDE + textwrap.dedent(code), timeout=BUILD_TIMEOUT, **_env(**env))


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    """Build the extension once, before the tests that load it."""
    run("assert torch.npu.is_available()")


def test_tensor_made_on_npu_is_on_npu():
    run("""
        t = torch.empty(3, device="npu")
        assert t.device.type == "npu" and t.device.index == 0, t.device
        assert not t.is_cpu and t.is_npu
        assert torch.ones(2, device="npu:1").device == torch.device("npu", 1)
        assert torch.ones(2).npu().device == torch.device("npu", 0)
        assert torch.zeros(2, 3, device="npu").untyped_storage().device.type == "npu"
        assert torch._C._get_privateuse1_backend_name() == "npu"
        assert torch_npu.EMULATED is True
        assert "emulat" in torch_npu.__doc__.lower() and "emulat" in torch.npu.__doc__.lower()
    """)


def test_cpu_npu_cpu_round_trip_is_exact():
    run("""
        torch.manual_seed(0)
        special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40])
        bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16,
                torch.float16: torch.int16}
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int32):
            if dtype.is_floating_point:
                x = torch.cat([torch.randn(1000), special]).to(dtype)
            else:
                x = torch.randint(-2**31, 2**31 - 1, (1000,), dtype=dtype)
            on_npu = x.to("npu")
            assert on_npu.device.type == "npu" and on_npu.dtype == dtype
            back = on_npu.cpu()
            assert back.device.type == "cpu" and back.dtype == dtype
            if dtype.is_floating_point:  # bit for bit, NaN and signed zero included
                assert torch.equal(back.view(bits[dtype]), x.view(bits[dtype])), dtype
            else:
                assert torch.equal(back, x), dtype
            # npu -> npu on another device, and a dtype change on the way
            assert torch.equal(on_npu.to("npu:1").cpu().view(torch.uint8), x.view(torch.uint8))
            wide = on_npu.to(torch.float64)
            assert wide.device.type == "npu"
            assert torch.allclose(wide.cpu(), x.double(), rtol=0, atol=0, equal_nan=True)

        # lazily conjugated and negated tensors are resolved by the copy, both ways
        z = torch.randn(8, dtype=torch.complex64)
        nz = z.to("npu")
        assert nz.conj().is_conj() and torch.equal(nz.conj().cpu(), z.conj())
        assert torch.equal(nz.conj().imag.cpu(), z.conj().imag)  # imag of conj: negative bit
        into = torch.empty(8, dtype=torch.complex64, device="npu")
        into.copy_(z.conj())
        assert torch.equal(into.cpu(), z.conj())
    """)


def test_ops_without_npu_kernel_run_on_the_cpu_fallback():
    run("""
        import torch.nn.functional as F
        has = torch._C._dispatch_has_kernel_for_dispatch_key
        for op in ("aten::mm", "aten::_softmax", "aten::index_select", "aten::add_.Tensor"):
            assert not has(op, "PrivateUse1"), f"{op} has an npu kernel: not the fallback"
        assert torch._C._dispatch_has_backend_fallback(torch._C.DispatchKey.PrivateUse1)

        torch.manual_seed(0)
        a, b = torch.randn(8, 16), torch.randn(16, 4)
        index = torch.tensor([5, 0, 7, 5])
        na, nb, nindex = a.to("npu"), b.to("npu"), index.to("npu")
        cases = {
            "matmul": (torch.matmul(na, nb), torch.matmul(a, b)),
            "softmax": (F.softmax(na, dim=-1), F.softmax(a, dim=-1)),
            "index_select": (na.index_select(0, nindex), a.index_select(0, index)),
            "sum": (na.sum(dim=0), a.sum(dim=0)),
            "where": (torch.where(na > 0, na, nb[0, 0]), torch.where(a > 0, a, b[0, 0])),
        }
        for name, (got, want) in cases.items():
            assert got.device.type == "npu", (name, got.device)
            assert torch.equal(got.cpu(), want), name

        # in place: same tensor, same memory, new values
        before = na.data_ptr()
        out = na.add_(1.5)
        assert out is na and na.data_ptr() == before and na.device.type == "npu"
        assert torch.equal(na.cpu(), a + 1.5)

        # .item() and a scalar read back
        assert na[2, 3].item() == (a + 1.5)[2, 3].item()
        assert torch.arange(5, device="npu").sum().item() == 10
    """)


def test_views_strides_and_non_contiguous_tensors():
    run("""
        base_cpu = torch.arange(24.0).reshape(4, 6)
        base = base_cpu.to("npu")

        t = base.t()
        assert t.stride() == base_cpu.t().stride() and not t.is_contiguous()
        assert t.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
        assert torch.equal(t.cpu(), base_cpu.t())
        c = t.contiguous()
        assert c.is_contiguous() and c.device.type == "npu" and torch.equal(c.cpu(), base_cpu.t())

        views = {
            "step slice": (base[1:, ::2], base_cpu[1:, ::2]),
            "view": (base.view(6, 4), base_cpu.view(6, 4)),
            "reshape": (base.reshape(2, 12), base_cpu.reshape(2, 12)),
            "expand": (base[:1].expand(3, 6), base_cpu[:1].expand(3, 6)),
            "as_strided": (base.as_strided((3, 3), (7, 1), 1),
                           base_cpu.as_strided((3, 3), (7, 1), 1)),
            "unfold": (base.unfold(1, 3, 2), base_cpu.unfold(1, 3, 2)),
            "select": (base.select(1, 4), base_cpu.select(1, 4)),
        }
        for name, (got, want) in views.items():
            assert got.device.type == "npu", name
            assert got.shape == want.shape and got.stride() == want.stride(), name
            assert got.storage_offset() == want.storage_offset(), name
            assert got.untyped_storage().data_ptr() == base.untyped_storage().data_ptr(), name
            assert torch.equal(got.cpu(), want), name
            assert torch.equal((got * 2).cpu(), want * 2), name  # an op on the view

        # writes through a view reach the base, as on cpu
        base[:, 1].fill_(-1.0)
        base_cpu[:, 1].fill_(-1.0)
        base[1:, ::2].add_(100)
        base_cpu[1:, ::2].add_(100)
        t.mul_(2)
        base_cpu.t().mul_(2)
        assert torch.equal(base.cpu(), base_cpu)

        # copies into and out of non-contiguous npu tensors
        dst = torch.zeros(6, 4, device="npu").t()
        dst.copy_(base_cpu)
        assert torch.equal(dst.cpu(), base_cpu)
        assert torch.equal(base.t().cpu(), base_cpu.t())
        back = torch.empty(6, 4).t()
        back.copy_(base)
        assert torch.equal(back, base_cpu)

        # view on an incompatible layout fails as on cpu
        try:
            t.view(24)
        except RuntimeError:
            pass
        else:
            raise AssertionError("view of a transposed tensor should fail")

        # resize_ and set_
        r = torch.empty(0, device="npu")
        r.resize_(3, 5)
        assert r.shape == (3, 5) and r.device.type == "npu"
        s = torch.empty(0, device="npu").set_(base.untyped_storage(), 2, (2, 2), (6, 1))
        assert torch.equal(s.cpu(), base_cpu.flatten()[2:].as_strided((2, 2), (6, 1)))
    """)


def test_memory_allocated_grows_and_falls():
    run("""
        n = 1 << 20
        torch.npu.reset_peak_memory_stats()
        before = torch.npu.memory_allocated()
        free_before, total = torch.npu.mem_get_info()
        assert total == torch.npu.get_device_properties(0).total_memory == 16 * 1024**3

        x = torch.empty(n, dtype=torch.uint8, device="npu")
        assert torch.npu.memory_allocated() == before + n
        assert torch.npu.max_memory_allocated() >= before + n
        assert torch.npu.mem_get_info()[0] == free_before - n
        assert torch.npu.memory_allocated(1) == 0  # another device's count is its own

        y = torch.empty(n // 4, dtype=torch.float32, device="npu:1")
        assert torch.npu.memory_allocated(1) == n
        del x, y
        assert torch.npu.memory_allocated() == before
        assert torch.npu.memory_allocated(1) == 0
        assert torch.npu.max_memory_allocated() >= before + n  # the peak stays
        torch.npu.reset_peak_memory_stats()
        assert torch.npu.max_memory_allocated() == before
        torch.npu.empty_cache()

        # host copies are not npu memory; pinned host memory is host memory
        cpu = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        assert cpu.is_pinned() and torch.npu.memory_allocated() == before
        assert not torch.empty(4).is_pinned()
    """)


def test_torch_accelerator_memory_calls_reach_the_allocator():
    """torch.accelerator's memory API (vLLM 0.33 calls empty_cache after loading a model)
    needs the device's allocator to be a c10::DeviceAllocator, as torch_npu's is."""
    run("""
        n = 1 << 20
        acc = torch.accelerator
        assert acc.current_accelerator().type == "npu"
        before = acc.memory_allocated()
        x = torch.empty(n, dtype=torch.uint8, device="npu")
        assert acc.memory_allocated() == before + n == torch.npu.memory_allocated()
        assert acc.max_memory_allocated() >= before + n
        if hasattr(acc, "get_memory_info"):
            assert acc.get_memory_info() == torch.npu.mem_get_info()
        acc.empty_cache()
        del x
        acc.reset_peak_memory_stats()
        assert acc.max_memory_allocated() == acc.memory_allocated() == before
    """)


def test_device_count_set_and_current():
    run("""
        assert torch.npu.device_count() == 2
        assert torch.npu.current_device() == 0
        torch.npu.set_device(1)
        assert torch.npu.current_device() == 1
        assert torch.empty(1, device="npu").device == torch.device("npu", 1)
        torch.npu.set_device("npu:0")
        assert torch.npu.current_device() == 0
        with torch.npu.device(1):
            assert torch.npu.current_device() == 1
        assert torch.npu.current_device() == 0
        try:
            torch.npu.set_device(2)
        except RuntimeError as err:
            assert "invalid npu device index" in str(err)
        else:
            raise AssertionError("set_device(2) should fail with 2 devices")
        # the current device is per thread: a new thread starts on device 0
        import threading
        seen = []
        torch.npu.set_device(1)
        worker = threading.Thread(target=lambda: seen.append(torch.npu.current_device()))
        worker.start()
        worker.join()
        assert seen == [0] and torch.npu.current_device() == 1
        assert torch.npu.get_device_name(1) == torch.npu.get_device_properties(1).name
        assert "emulated" in torch.npu.get_device_name().lower()
    """)
    run(
        "assert torch.npu.device_count() == 3, torch.npu.device_count()",
        VLLM_ASCEND_COMPAT_EMULATED_NPU_DEVICES="3",
    )


def test_streams_and_events_are_synchronous():
    run("""
        default = torch.npu.current_stream()
        assert isinstance(default, torch.npu.Stream) and default.device == torch.device("npu", 0)
        assert default == torch.npu.default_stream()
        side = torch.npu.Stream()
        assert side != default and side.device.type == "npu"
        with torch.npu.stream(side):
            assert torch.npu.current_stream() == side
            x = torch.ones(4, device="npu") * 3  # done when issued
        assert torch.npu.current_stream() == default
        assert side.query() and default.query()  # nothing left to run

        start = torch.npu.Event(enable_timing=True)
        end = torch.npu.Event(enable_timing=True)
        start.record()
        y = x + 1
        end.record(side)
        assert start.query() and end.query()  # complete as soon as recorded
        end.synchronize()
        default.wait_event(end)
        default.wait_stream(side)
        side.synchronize()
        torch.npu.synchronize()
        assert start.elapsed_time(end) >= 0.0
        assert torch.equal(y.cpu(), torch.full((4,), 4.0))

        untimed_a, untimed_b = torch.npu.Event(), torch.npu.Event()
        untimed_a.record()
        untimed_b.record()
        try:
            untimed_a.elapsed_time(untimed_b)
        except RuntimeError as err:
            assert "enable_timing" in str(err)
        else:
            raise AssertionError("elapsed_time needs enable_timing=True")

        # streams are per device and per thread
        with torch.npu.device(1):
            other = torch.npu.Stream()
        assert other.device == torch.device("npu", 1)
        with torch.npu.stream(other):
            assert torch.npu.current_stream(1) == other
            assert torch.npu.current_stream(0) == default
    """)


def test_seeded_random_ops_match_cpu():
    run("""
        torch.manual_seed(123)  # seeds cpu and, through torch.npu.manual_seed_all, npu
        want = torch.randn(5)
        torch.manual_seed(123)
        got = torch.randn(5, device="npu")
        assert got.device.type == "npu" and torch.equal(got.cpu(), want)

        g = torch.Generator(device="npu")
        assert g.device.type == "npu"
        g.manual_seed(7)
        a = torch.rand(4, device="npu", generator=g)
        g.manual_seed(7)
        b = torch.rand(4, device="npu", generator=g)
        assert torch.equal(a.cpu(), b.cpu())
        assert torch.equal(a.cpu(), torch.rand(4, generator=torch.Generator().manual_seed(7)))
    """)


def test_hccl_collectives_between_two_processes(tmp_path: Path):
    """The emulated ``hccl`` backend: two ranks, one npu device each, run the collectives
    vLLM's communicator calls, in place on npu tensors, on the default and a new group."""
    port = free_port()
    code = PRELUDE + textwrap.dedent(f"""
        import torch.distributed as dist
        rank = int(sys.argv[1])
        torch.npu.set_device(rank)
        dist.init_process_group("hccl", init_method="tcp://127.0.0.1:{port}", rank=rank,
                                world_size=2)
        dev = torch.device("npu", rank)
        for group in (None, dist.new_group([0, 1], backend="hccl")):
            assert dist.get_backend(group) == "hccl"
            for dtype in (torch.float32, torch.bfloat16):
                t = torch.full((4,), rank + 1.0, dtype=dtype, device=dev)
                dist.all_reduce(t, group=group)
                assert t.device == dev and t.tolist() == [3.0] * 4, t
            stacked = torch.empty(2, 3, device=dev)  # vLLM's all_gather: (world, *shape)
            dist.all_gather_into_tensor(stacked, torch.full((3,), float(rank), device=dev),
                                        group=group)
            assert stacked.tolist() == [[0.0] * 3, [1.0] * 3], stacked
            parts = [torch.empty(2, device=dev) for _ in range(2)]
            dist.all_gather(parts, torch.full((2,), float(rank), device=dev), group=group)
            assert [p.tolist() for p in parts] == [[0.0, 0.0], [1.0, 1.0]], parts
            mine = torch.empty(2, device=dev)
            dist.reduce_scatter_tensor(mine, torch.arange(4.0, device=dev), group=group)
            assert mine.tolist() == ([0.0, 2.0] if rank == 0 else [4.0, 6.0]), mine
            sent = torch.full((2,), float(rank), device=dev)
            dist.broadcast(sent, src=1, group=group)
            assert sent.tolist() == [1.0, 1.0], sent
            if rank == 0:
                dist.send(torch.arange(5.0, device=dev), dst=1, group=group)
            else:
                got = torch.zeros(5, device=dev)
                dist.recv(got, src=0, group=group)
                assert got.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0], got
            host = torch.full((2,), float(rank))  # a cpu tensor goes to gloo unchanged
            dist.all_reduce(host, group=group)
            assert host.tolist() == [1.0, 1.0], host
            dist.barrier(group=group)
        print("RANK", rank, "OK")
        dist.destroy_process_group()
    """)
    script = tmp_path / "ranks.py"
    script.write_text(code)
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(**_env()),
        )
        for rank in range(2)
    ]
    outputs = [rank.communicate(timeout=BUILD_TIMEOUT)[0] for rank in ranks]
    for rank, (proc, output) in enumerate(zip(ranks, outputs, strict=True)):
        assert proc.returncode == 0 and f"RANK {rank} OK" in output, output


def test_the_plugin_device_facade_runs_on_the_emulator():
    """What vllm_ascend_compat.device.NpuDevice calls on torch.npu exists and works."""
    run(f"""
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from vllm_ascend_compat import activation, device

        decision = activation.decide()
        assert decision.active and decision.device == "npu", decision
        npu = device.NpuDevice()
        assert npu.device_count() == 2
        npu.set_device(torch.device("npu", 1))
        assert torch.npu.current_device() == 1
        npu.set_device(torch.device("npu", 0))
        npu.synchronize()
        assert "emulated" in npu.name().lower()
        assert npu.total_memory() == 16 * 1024**3
        x = torch.empty(1 << 20, dtype=torch.uint8, device=npu.torch_device())
        assert npu.memory_in_use() >= 1 << 20
        budget = npu.kv_cache_budget(None, 0.5)
        assert budget == 8 * 1024**3 - npu.memory_in_use(), budget
        npu.empty_cache()
        npu.manual_seed_all(0)
        with npu.as_cuda():
            stream = torch.cuda.Stream()
            event = torch.cuda.Event()
            with torch.cuda.stream(stream):
                assert torch.cuda.current_stream() == stream
                event.record()
            event.synchronize()
            assert torch.cuda.default_stream().device.type == "npu"
    """)


def _make_venv(root: Path) -> Path:
    """A bare venv that sees this interpreter's packages (torch) through a .pth line."""
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=clean_env()
    )
    base = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (
        venv
        / "lib"
        / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        / "site-packages"
        / "base.pth"
    ).write_text(base + "\n")
    return venv


def test_the_switch_makes_torch_npu_importable_in_every_process(tmp_path: Path):
    venv = _make_venv(tmp_path)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [sys.executable, str(EMULATOR / "install.py"), str(venv)],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert installed.returncode == 0, installed.stderr
    assert "vllm_ascend_compat_emulator.pth" in installed.stdout

    # A process and its child: torch_npu only with the variable, the emulator's then.
    code = textwrap.dedent("""
        import importlib.util, subprocess, sys
        probe = "import importlib.util; print(importlib.util.find_spec('torch_npu') is not None)"
        child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        try:
            import torch_npu
        except ModuleNotFoundError:
            print("absent", child.stdout.strip())
        else:
            import torch
            x = torch.ones(2, device="npu")
            print("present", child.stdout.strip(), torch_npu.EMULATED, x.device.type)
    """)

    def probe(**extra: str) -> str:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            env=clean_env(**_env(**extra)),
            cwd=tmp_path,
            timeout=BUILD_TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert probe() == "absent False"
    assert probe(**{SWITCH: "0"}) == "absent False"
    assert probe(**{SWITCH: "1"}) == "present True True npu"

    removed = subprocess.run(
        [sys.executable, str(EMULATOR / "install.py"), "--uninstall", str(venv)],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert removed.returncode == 0, removed.stderr
    assert probe(**{SWITCH: "1"}) == "absent False"


def test_the_switch_of_a_deleted_checkout_starts_python_silently(tmp_path: Path):
    """CI clones come and go while their venvs stay: with the checkout gone, the switch
    must not print a traceback at every interpreter start, variable set or not."""
    venv = _make_venv(tmp_path)
    clone = tmp_path / "clone" / "emulator"
    clone.mkdir(parents=True)
    shutil.copy(EMULATOR / "install.py", clone)
    installed = subprocess.run(
        [sys.executable, str(clone / "install.py"), str(venv)],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert installed.returncode == 0, installed.stderr
    shutil.rmtree(tmp_path / "clone")
    code = "import importlib.util; print(importlib.util.find_spec('torch_npu') is None)"
    for switch in ("0", "1"):
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            env=clean_env(**{SWITCH: switch}),
            cwd=tmp_path,
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True\n", ""), proc


def test_the_installed_plugin_does_not_ship_the_emulator():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["vllm_ascend_compat*"]
    assert not (REPO_ROOT / "vllm_ascend_compat" / "emulator").exists()
