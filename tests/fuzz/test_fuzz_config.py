"""Fuzzing the configuration parsers: run configs (dicts and scenario TOML), training configs, preparation settings.

Contract: a dict or TOML text gives a config whose every value has its field's type (numbers finite), or a
``ValueError`` whose message names the offending key; nothing else. Keys and values are generated from
``dataclasses.fields()``, so a field added later is fuzzed without touching this file.
"""

from __future__ import annotations

import math
import shutil
import string
from dataclasses import MISSING, fields
from pathlib import Path

import tomli_w
from hypothesis import assume, event, given
from hypothesis import strategies as st

from liteheart_core.config import FedConfig
from liteheart_core.data.prepare import PrepSettings
from liteheart_core.train import TrainConfig
from tests.fuzz.conftest import fuzz_settings, scratch_dir, time_limit

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
    st.text(max_size=10),
    st.sampled_from(["", "nan", "inf", "1e400", "true", "false", "0x10", " 3 ", "١٢"]),
    st.lists(st.integers(-3, 3), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _default(field) -> object:
    if field.default is not MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not MISSING else None


def plausible(default: object) -> st.SearchStrategy:
    """Values a user might well write for a field with this default."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.sampled_from([default, 0, 1, 2, 3, 4, 8, 100, default * 2])
    if isinstance(default, float):
        return st.sampled_from([default, 0.0, 0.1, 0.5, 0.9, 1.0, 2.0, default * 2, default / 2])
    if isinstance(default, tuple):
        return st.sampled_from([default, tuple(reversed(default)), default[:1], ()])
    return st.just(default)


@st.composite
def config_dict(draw: st.DrawFn, cls: type, kebab: bool) -> dict:
    """Mostly plausible values, a few hostile ones, sometimes an unknown (unicode) key."""
    out = {}
    for f in fields(cls):
        if draw(st.integers(0, 5)):  # a few keys per example, so that many examples are valid configs
            continue
        key = f.name.replace("_", "-") if kebab and draw(st.booleans()) else f.name
        out[key] = draw(HOSTILE if draw(st.integers(0, 9)) == 0 else plausible(_default(f)))
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.text(min_size=1, max_size=8))] = draw(HOSTILE)
    return out


def spellings(keys) -> set[str]:
    return {s for k in keys for s in (str(k), repr(k), str(k).replace("_", "-"), str(k).replace("-", "_"))}


def check(cls: type, build, data: dict):
    """``build(data)``: a config of well-typed, finite values, or a ValueError naming a key of ``data``."""
    try:
        with time_limit(20):
            cfg = build(data)
    except ValueError as exc:
        event("refused")
        assert any(s in str(exc) for s in spellings(data)), f"error names no key: {exc}"
        return None
    event("accepted")
    by_name = {f.name: f for f in fields(cls)}
    for key, given_value in data.items():  # a wrong type is refused, not converted (str([1]), int(True))
        default = _default(by_name[str(key).replace("-", "_")])
        if isinstance(default, str) and given_value is not None:
            assert isinstance(given_value, str), f"{key} = {given_value!r} accepted as a string"
        if isinstance(given_value, bool) and default is not None:
            assert isinstance(default, bool), f"{key} = {given_value!r} accepted as a {type(default).__name__}"
    for f in fields(cls):
        default, value = _default(f), getattr(cfg, f.name)
        if default is None or (value is None and "None" in str(f.type)):  # optional fields may be None
            continue
        assert type(value) is type(default), f"{f.name} = {value!r} is no {type(default).__name__}"
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            assert not isinstance(v, float) or math.isfinite(v), f"{f.name} = {value!r} accepted"
            assert not isinstance(v, int) or abs(v) < 2**63, f"{f.name} = {value!r} accepted"
    return cfg


@fuzz_settings(200)
@given(data=config_dict(FedConfig, kebab=True))
def test_run_config_from_dict(data: dict) -> None:
    check(FedConfig, FedConfig.from_dict, data)


@fuzz_settings(150)
@given(data=config_dict(TrainConfig, kebab=False))
def test_train_config_from_dict(data: dict) -> None:
    check(TrainConfig, TrainConfig.from_dict, data)


@fuzz_settings(150)
@given(data=config_dict(PrepSettings, kebab=False))
def test_preparation_settings_from_dict(data: dict) -> None:
    check(PrepSettings, PrepSettings.from_dict, data)


def _toml_safe(value):
    return value is not None and not (isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63)


@fuzz_settings(80)
@given(data=config_dict(FedConfig, kebab=True), nested=st.booleans())
def test_scenario_toml(data: dict, nested: bool) -> None:
    # Prepare: a scenario file, flat or under [liteheart]
    data = {k: v for k, v in data.items() if _toml_safe(v)}
    try:
        text = tomli_w.dumps({"liteheart": data} if nested else data)
    except (TypeError, ValueError):  # a value TOML cannot hold
        assume(False)
    path = scratch_dir() / "scenario.toml"
    try:
        path.write_text(text)

        # Execute / Assert
        check(FedConfig, lambda d: FedConfig.from_toml(path), data)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


VALID_TOML = 'clients = 3\nrounds = 2\npartition = "dirichlet"\nalpha = 0.3\nlabelled-fraction = 0.5\n'


@fuzz_settings(150)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(VALID_TOML)), st.text(string.printable + "é[]=\"'", max_size=6)),
        min_size=1,
        max_size=4,
    )
)
def test_scenario_toml_text_edits(edits) -> None:
    # Prepare: a valid scenario with random text spliced in
    text = VALID_TOML
    for pos, piece in edits:
        text = text[:pos] + piece + text[pos + len(piece) :]
    path = scratch_dir() / "scenario.toml"
    path.write_text(text)

    # Execute / Assert: a config, or a ValueError naming the file or a key
    try:
        with time_limit(20):
            cfg = FedConfig.from_toml(path)
    except ValueError as exc:
        keys = {f.name for f in fields(FedConfig)} | {line.split("=")[0].strip() for line in text.splitlines()}
        assert str(path) in str(exc) or any(s in str(exc) for s in spellings(k for k in keys if k)), str(exc)
        return
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert isinstance(cfg, FedConfig)


def test_missing_scenario_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    try:
        FedConfig.from_toml(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        raise AssertionError("a missing scenario file was accepted")


@fuzz_settings(20)
@given(value=HOSTILE.filter(lambda v: v is not None and not isinstance(v, dict)))
def test_scenario_whose_liteheart_key_is_no_table(value) -> None:
    try:
        text = tomli_w.dumps({"liteheart": value})
    except (TypeError, ValueError):
        assume(False)
    path = scratch_dir() / "scenario.toml"
    try:
        path.write_text(text)
        check(FedConfig, lambda d: FedConfig.from_toml(path), {"liteheart": value})
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
