"""The patch registry's guarantees, each case in a fresh interpreter."""

from __future__ import annotations

import itertools

import pytest
from conftest import check_python, run_python

pytestmark = pytest.mark.release_independent

PREAMBLE = "import sys\nfrom targets.harness import *\n"


@pytest.mark.parametrize("order", list(itertools.permutations(["import", "patch", "unpatch"])))
def test_every_ordering_of_import_patch_unpatch(order: tuple[str, ...]) -> None:
    steps = {
        "import": "import targets.sample_target",
        "patch": "run(make('p', 'greet'))",
        "unpatch": "unpatch()",
    }
    patched = order.index("patch") > order.index("unpatch")
    expected = "HELLO X" if patched else "hello x"
    check_python(
        PREAMBLE
        + "\n".join(steps[s] for s in order)
        + f"""
import targets.sample_target as t
from targets.sample_impls import CALLS
assert t.greet("x") == {expected!r}, t.greet("x")
assert (t.greet.__qualname__ == "greet") == {not patched}
assert CALLS.count("shout") <= 1, CALLS
"""
    )


def test_patch_waits_for_import_then_applies_once() -> None:
    check_python(
        PREAMBLE
        + """
run(make('p', 'greet'))
assert 'targets.sample_target' not in sys.modules
assert status() == {'p': Status.PENDING}
import targets.sample_target as t
assert t.greet("x") == "HELLO X"
assert status() == {'p': Status.APPLIED}
"""
    )


def test_impl_module_that_imports_another_pending_target_applies_both() -> None:
    """The first target's hook imports the impl module, which imports the second target:
    the second hook fires while that module is half-imported, and applies after it."""
    check_python(
        PREAMBLE
        + """
from dataclasses import replace
greet = replace(make('greet', 'greet'), impl='targets.cross_impls:shout_greet')
wave = replace(make('wave', 'greet'), target='targets.second_target:wave',
               impl='targets.cross_impls:shout_wave')
run(greet, wave)
assert status() == {'greet': Status.PENDING, 'wave': Status.PENDING}, status()
import targets.sample_target as t
import targets.second_target as s
assert status() == {'greet': Status.APPLIED, 'wave': Status.APPLIED}, status()
assert (t.greet("x"), s.wave("y")) == ("HELLO X", "BYE Y")
"""
    )


def test_double_patch_counts_as_once() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
p = make('p', 'greet', kind=Kind.WRAP, impl='tag')
run(p)
run(p)
apply([p], RELEASE, known_ids=['p'])
assert t.greet("x") == ("wrapped", "hello x"), t.greet("x")
unpatch()
assert t.greet("x") == "hello x"
"""
    )


def test_alias_sweep_rebinds_and_restores_from_imports() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t, targets.sample_alias as a
original = t.greet
run(make('p', 'greet'))
assert a.greet is t.greet and a.greet("x") == "HELLO X"
(outcome,) = report()
assert outcome.aliases == ['targets.sample_alias.greet'], outcome.aliases
unpatch()
assert t.greet is original and a.greet is original
"""
    )


@pytest.mark.parametrize("kind", ["REPLACE", "WRAP"])
@pytest.mark.parametrize(
    ("attr", "call", "descriptor"),
    [
        ("method", "Greeter().method(1)", "function"),
        ("static", "Greeter.static(1)", "staticmethod"),
        ("static", "Greeter().static(1)", "staticmethod"),
        ("klass", "Greeter.klass(1)", "classmethod"),
        ("klass", "Greeter().klass(1)", "classmethod"),
        ("prop", "Greeter().prop", "property"),
    ],
)
def test_each_descriptor_kind_is_patched_and_restored_exactly(
    kind: str, attr: str, call: str, descriptor: str
) -> None:
    impl = "shout" if kind == "REPLACE" else "tag"
    check_python(
        PREAMBLE
        + f"""
from targets.sample_target import Greeter
raw = Greeter.__dict__[{attr!r}]
before = {call}
run(make('p', 'Greeter.{attr}', kind=Kind.{kind}, impl={impl!r}))
after = {call}
assert after != before, (before, after)
if {kind!r} == "WRAP":
    assert after == ("wrapped", before), after
elif isinstance(before, str):
    assert after == before.upper(), after
else:
    assert after == ("shout", before), after
if {descriptor!r} != "function":
    assert type(Greeter.__dict__[{attr!r}]).__name__ in ({descriptor!r}, "FunctionWrapper")
unpatch()
assert Greeter.__dict__[{attr!r}] is raw
assert type(raw).__name__ == {descriptor!r}
assert {call} == before
"""
    )


def test_inherited_target_is_removed_again_on_unpatch() -> None:
    check_python(
        PREAMBLE
        + """
from targets.sample_target import Child, Greeter
run(make('p', 'Child.method'))
assert 'method' in Child.__dict__ and Child().method(1) == ("shout", ("method", 1))
assert Greeter().method(1) == ("method", 1)
unpatch()
assert 'method' not in Child.__dict__
"""
    )


def test_failure_rolls_back_the_phase_and_names_patch_target_release() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
original = t.greet
try:
    run(make('good', 'greet'), make('bad', 'Greeter.method', impl='boom'))
except PatchError as err:
    message = str(err)
else:
    raise AssertionError("no error")
for part in ("'bad'", "targets.sample_target:Greeter.method", "0.11.0", "boom"):
    assert part in message, (part, message)
assert t.greet is original
assert status() == {'good': Status.ROLLED_BACK, 'bad': Status.FAILED}, status()
"""
    )


@pytest.mark.parametrize(
    ("target", "extra", "cause"),
    [
        ("nothing_here", "", "target not found"),
        ("Missing.attr", "", "target not found"),
        (
            "greet",
            ", signature='(name, loud)'",
            "signature drift: expected (name, loud), found (name)",
        ),
    ],
)
def test_drift_fails_loudly(target: str, extra: str, cause: str) -> None:
    check_python(
        PREAMBLE
        + f"""
import targets.sample_target
try:
    run(make('drifted', {target!r}{extra}))
except PatchError as err:
    assert {cause!r} in str(err) and "'drifted'" in str(err), str(err)
else:
    raise AssertionError("drift went unnoticed")
"""
    )


def test_matching_signature_applies() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
run(make('p', 'greet', signature='(name)'))
assert t.greet("x") == "HELLO X"
"""
    )


def test_optional_patch_failure_is_reported_not_raised() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
run(make('opt', 'nothing_here', optional=True), make('good', 'greet'))
assert status() == {'opt': Status.FAILED, 'good': Status.APPLIED}, status()
assert 'target not found' in report()[0].detail
"""
    )


def test_failure_on_lazy_import_fails_the_import_and_rolls_back() -> None:
    proc = run_python(
        PREAMBLE
        + """
run(make('good', 'greet'), make('bad', 'nothing_here'))
import targets.sample_target
"""
    )
    assert proc.returncode != 0
    assert "'bad'" in proc.stderr and "target not found" in proc.stderr, proc.stderr


def test_add_missing_adds_then_removes_and_refuses_existing() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
run(make('add', 'new_name', kind=Kind.ADD_MISSING, impl='added'))
assert t.new_name(1) == ("added", 1)
unpatch()
assert not hasattr(t, 'new_name')
try:
    run(make('add2', 'greet', kind=Kind.ADD_MISSING, impl='added'))
except PatchError as err:
    assert 'already exists' in str(err)
else:
    raise AssertionError("add-missing replaced an existing attribute")
"""
    )


def test_out_of_range_patch_is_not_applied_nor_its_impl_imported() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
run(make('old', 'greet', versions='<0.10'))
assert t.greet("x") == "hello x"
assert 'targets.sample_impls' not in sys.modules
assert status() == {'old': Status.OUT_OF_RANGE}
"""
    )


def test_disable_by_id() -> None:
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
run(make('off', 'greet'), make('on', 'Greeter.method'))
assert t.greet("x") == "hello x"
assert status() == {'off': Status.DISABLED, 'on': Status.APPLIED}, status()
""",
        VLLM_ASCEND_COMPAT_DISABLE_PATCHES="off",
    )


def test_unknown_disabled_id_is_an_error() -> None:
    proc = run_python(
        PREAMBLE + "run(make('p', 'greet'))",
        VLLM_ASCEND_COMPAT_DISABLE_PATCHES="p,no-such-patch",
    )
    assert proc.returncode != 0
    assert "unknown patch ids: no-such-patch" in proc.stderr, proc.stderr


def test_stacked_patches_unpatch_together_or_not_at_all() -> None:
    """Two patches on one target: removing the lower alone would silently drop the upper."""
    check_python(
        PREAMBLE
        + """
import targets.sample_target as t
original = t.greet
run(make('lower', 'greet'), make('upper', 'greet', kind=Kind.WRAP, impl='tag'))
assert t.greet("x") == ("wrapped", "HELLO X")
try:
    unpatch(['lower'])
except PatchError as err:
    assert "'lower' alone: 'upper' is stacked" in str(err), err
else:
    raise AssertionError("unpatching the lower patch alone was accepted")
assert t.greet("x") == ("wrapped", "HELLO X")  # nothing changed
unpatch(['upper'])
assert t.greet("x") == "HELLO X"
unpatch(['lower'])
assert t.greet is original
"""
    )
