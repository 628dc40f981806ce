"""Release detection: real vLLM version strings, the window, the override, and never a wrong
release."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import InvalidVersion, Version

from vllm_ascend_compat import release
from vllm_ascend_compat.release import ReleaseError, Window, resolve

pytestmark = pytest.mark.release_independent
WINDOW = Window(
    lowest="0.9.2",
    highest="0.18.0",
    releases=(),
    anchors=(),
    default="0.11.0",
    environments=(),
    wheel_only={},
)


@pytest.mark.parametrize(
    ("installed", "selected", "flavour"),
    [
        ("0.9.2", "0.9.2", ""),
        ("0.11.0", "0.11.0", ""),
        ("0.12.0", "0.12.0", ""),  # no anchor: every release of the window is supported
        ("0.10.1.1", "0.10.1.1", ""),  # a fourth release number is kept, not truncated
        ("0.9.2.post1", "0.9.2.post1", ""),
        ("0.11.0+empty", "0.11.0", "empty"),
        ("0.11.0+cpu", "0.11.0", "cpu"),
        ("0.18.0+cu129", "0.18.0", "cu129"),
        ("0.9.2+rocm641", "0.9.2", "rocm641"),
        ("0.9.2+precompiled", "0.9.2", "precompiled"),
        ("0.9.2.post1+gabc1234.cpu", "0.9.2.post1", "cpu"),
        ("0.18.0+gabc1234", "0.18.0", ""),
        ("v0.11.0", "0.11.0", ""),
        (" 0.11.0\n", "0.11.0", ""),
        ("0.18", "0.18", ""),  # the highest release, written short
    ],
)
def test_releases_in_the_window_select_exactly_themselves(
    installed: str, selected: str, flavour: str
) -> None:
    detected = resolve(installed, "test", None, False, WINDOW)
    assert detected.supported
    assert detected.release == Version(selected)
    assert detected.flavour == flavour
    assert detected.warnings == ()


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        ("0.9.2.dev123+gabc1234", "development build or release candidate"),
        ("0.9.2.dev5+gabc1234.cpu", "development build or release candidate"),
        ("0.11.0rc1", "development build or release candidate"),
        ("0.18.1", "outside the supported window: every release from 0.9.2 to 0.18.0"),
        ("0.9.1+empty", "VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED=1"),
        ("0.19.0", "outside the supported window"),
        ("dev", "not a valid PEP 440 version"),
        ("", "not a valid PEP 440 version"),
        (None, "cannot tell which vLLM release is installed"),
    ],
)
def test_unusable_versions_give_a_clear_error(installed: str | None, message: str) -> None:
    with pytest.raises(ReleaseError) as err:
        resolve(installed, "test", None, False, WINDOW)
    assert message in str(err.value)


def test_dev_build_error_names_the_override() -> None:
    with pytest.raises(ReleaseError, match="VLLM_ASCEND_COMPAT_VLLM_VERSION"):
        resolve("0.11.0.dev7+g1a2b3c", "test", None, False, WINDOW)


def test_override_selects_a_release_for_a_source_build_and_warns_with_both_values() -> None:
    detected = resolve("0.11.0.dev7+g1a2b3c", "test", "0.11.0", False, WINDOW)
    assert detected.release == Version("0.11.0")
    (warning,) = detected.warnings
    assert "0.11.0.dev7+g1a2b3c" in warning and "VLLM_ASCEND_COMPAT_VLLM_VERSION=0.11.0" in warning


def test_override_that_disagrees_with_the_installed_release_warns_loudly() -> None:
    detected = resolve("0.9.2+empty", "test", "0.18.0", False, WINDOW)
    assert detected.release == Version("0.18.0")
    assert "0.9.2+empty" in detected.warnings[0] and "0.18.0" in detected.warnings[0]


def test_matching_override_is_quiet() -> None:
    assert resolve("0.11.0+empty", "test", "0.11.0", False, WINDOW).warnings == ()


def test_override_fills_in_the_dev_fallback() -> None:
    detected = resolve(None, "none: vllm/_version.py is missing", "0.9.2", False, WINDOW)
    assert detected.release == Version("0.9.2")
    assert "no installed vLLM version found" in detected.warnings[0]


@pytest.mark.parametrize("override", ["latest", "0.11.x", "main"])
def test_invalid_override_is_an_error(override: str) -> None:
    with pytest.raises(ReleaseError, match="not a valid PEP 440"):
        resolve("0.11.0", "test", override, False, WINDOW)


def test_override_cannot_choose_a_release_outside_the_window() -> None:
    with pytest.raises(ReleaseError, match="outside the supported window"):
        resolve("0.11.0", "test", "0.19.0", False, WINDOW)


def test_allow_unsupported_proceeds_with_a_warning_and_the_exact_release() -> None:
    detected = resolve("0.19.0+empty", "test", None, True, WINDOW)
    assert not detected.supported
    assert detected.release == Version("0.19.0")
    assert "Proceeding because VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED" in detected.warnings[0]


def test_version_file_is_read_without_executing_it(tmp_path) -> None:
    path = tmp_path / "_version.py"
    path.write_text(
        "raise SystemExit('executed')\n__version__ = version = '0.11.0'\n"
        "__version_tuple__ = version_tuple = (0, 11, 0)\n"
    )
    assert release._read_version_file(path) == "0.11.0"
    assert release._read_version_file(tmp_path / "missing.py") is None


versions = st.one_of(
    st.text(max_size=30),
    st.from_regex(
        r"v?\d{1,2}(\.\d{1,3}){0,3}((a|b|rc)\d)?(\.post\d)?(\.dev\d+)?(\+[a-z0-9.]{1,12})?",
        fullmatch=True,
    ),
)


@given(installed=versions, override=st.one_of(st.none(), versions))
def test_any_string_gives_its_own_release_in_the_window_or_a_clear_error(
    installed: str, override: str | None
) -> None:
    try:
        detected = resolve(installed, "test", override, False, WINDOW)
    except ReleaseError:
        return
    chosen = Version((override or installed).strip())
    assert detected.supported and WINDOW.contains(chosen)
    assert detected.release.release == chosen.release
    assert detected.release.post == chosen.post
    assert not chosen.is_devrelease and not chosen.is_prerelease


@given(installed=versions)
def test_parse_never_crashes(installed: str) -> None:
    try:
        Version(installed.strip())
    except InvalidVersion:
        with pytest.raises(ReleaseError):
            release.parse_version(installed)
    else:
        assert release.parse_version(installed) == Version(installed.strip())


def test_release_data_declares_a_consistent_window() -> None:
    window = release.window()
    releases = [Version(v) for v in window.releases]
    assert releases == sorted(releases) and len(set(releases)) == len(releases)
    assert (window.releases[0], window.releases[-1]) == (window.lowest, window.highest)
    assert all(window.contains(v) for v in releases)
    assert window.highest in window.anchors and set(window.anchors) <= set(window.releases)
    assert window.lowest in window.anchors
    assert window.default in window.anchors
    assert set(window.wheel_only) <= set(window.releases)
    for version in window.releases:
        env = window.environment(version)  # every release has an environment
        Version(env.torch)
        assert (REPO_ROOT / env.constraints).is_file(), env.constraints
