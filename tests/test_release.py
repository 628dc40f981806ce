"""Release detection: real vLLM version strings, the override, and never a wrong line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import InvalidVersion, Version

from vllm_ascend_compat import release
from vllm_ascend_compat.release import ReleaseError, resolve

LINES = ("0.9.2", "0.11.0", "0.18.0")


@pytest.mark.parametrize(
    ("installed", "line", "flavour"),
    [
        ("0.9.2", "0.9.2", ""),
        ("0.11.0", "0.11.0", ""),
        ("0.9.2.post1", "0.9.2", ""),
        ("0.11.0+empty", "0.11.0", "empty"),
        ("0.11.0+cpu", "0.11.0", "cpu"),
        ("0.18.0+cu129", "0.18.0", "cu129"),
        ("0.9.2+rocm641", "0.9.2", "rocm641"),
        ("0.9.2+precompiled", "0.9.2", "precompiled"),
        ("0.9.2.post1+gabc1234.cpu", "0.9.2", "cpu"),
        ("0.18.0+gabc1234", "0.18.0", ""),
        ("v0.11.0", "0.11.0", ""),
        (" 0.11.0\n", "0.11.0", ""),
    ],
)
def test_real_release_strings_select_their_line(installed: str, line: str, flavour: str) -> None:
    detected = resolve(installed, "test", None, False, LINES)
    assert detected.line == line
    assert detected.release.release == Version(line).release
    assert detected.flavour == flavour
    assert detected.warnings == ()


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        ("0.9.2.dev123+gabc1234", "development build or release candidate"),
        ("0.9.2.dev5+gabc1234.cpu", "development build or release candidate"),
        ("0.11.0rc1", "development build or release candidate"),
        ("0.11.1", "not a supported release. Supported lines: 0.9.2, 0.11.0, 0.18.0"),
        ("0.10.0+empty", "VLLM_ASCEND_COMPAT_ALLOW_UNSUPPORTED=1"),
        ("dev", "not a valid PEP 440 version"),
        ("", "not a valid PEP 440 version"),
        (None, "cannot tell which vLLM release is installed"),
    ],
)
def test_unusable_versions_give_a_clear_error(installed: str | None, message: str) -> None:
    with pytest.raises(ReleaseError) as err:
        resolve(installed, "test", None, False, LINES)
    assert message in str(err.value)


def test_dev_build_error_names_the_override() -> None:
    with pytest.raises(ReleaseError, match="VLLM_ASCEND_COMPAT_VLLM_VERSION"):
        resolve("0.11.0.dev7+g1a2b3c", "test", None, False, LINES)


def test_override_selects_a_line_for_a_source_build_and_warns_with_both_values() -> None:
    detected = resolve("0.11.0.dev7+g1a2b3c", "test", "0.11.0", False, LINES)
    assert detected.line == "0.11.0"
    (warning,) = detected.warnings
    assert "0.11.0.dev7+g1a2b3c" in warning and "VLLM_ASCEND_COMPAT_VLLM_VERSION=0.11.0" in warning


def test_override_that_disagrees_with_the_installed_release_warns_loudly() -> None:
    detected = resolve("0.9.2+empty", "test", "0.18.0", False, LINES)
    assert detected.line == "0.18.0"
    assert "0.9.2+empty" in detected.warnings[0] and "0.18.0" in detected.warnings[0]


def test_matching_override_is_quiet() -> None:
    assert resolve("0.11.0+empty", "test", "0.11.0", False, LINES).warnings == ()


def test_override_fills_in_the_dev_fallback() -> None:
    detected = resolve(None, "none: vllm/_version.py is missing", "0.9.2", False, LINES)
    assert detected.line == "0.9.2"
    assert "no installed vLLM version found" in detected.warnings[0]


@pytest.mark.parametrize("override", ["latest", "0.11.x", "main"])
def test_invalid_override_is_an_error(override: str) -> None:
    with pytest.raises(ReleaseError, match="not a valid PEP 440"):
        resolve("0.11.0", "test", override, False, LINES)


def test_override_cannot_choose_an_unsupported_line() -> None:
    with pytest.raises(ReleaseError, match="not a supported release"):
        resolve("0.11.0", "test", "0.12.0", False, LINES)


def test_allow_unsupported_proceeds_with_a_warning_and_no_line() -> None:
    detected = resolve("0.12.0+empty", "test", None, True, LINES)
    assert detected.line is None
    assert detected.release == Version("0.12.0")
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
def test_any_string_gives_its_own_line_or_a_clear_error(
    installed: str, override: str | None
) -> None:
    try:
        detected = resolve(installed, "test", override, False, LINES)
    except ReleaseError:
        return
    chosen = Version((override or installed).strip())
    assert detected.line in LINES
    assert Version(detected.line).release == (*chosen.release, 0, 0)[:3]
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


def test_lines_file_declares_a_default_among_its_lines() -> None:
    default, lines = release.load_lines()
    assert default in [line.version for line in lines]
    for line in lines:
        Version(line.version)
        assert Version(line.torch)
