"""Issue 7, hostile input to the configuration loader: any text, whether YAML-ish
documents, mutations of the shipped configurations or random characters, gives either a
LoadedConfig or a ConfigError with issues (file, line, key, message); never another
exception, and no configured secret (PSK, password, NT hash, manual key) in the text."""

from __future__ import annotations

import yaml
from fuzz_targets import SECRETS_CONFIG, ConfigTarget
from fuzzing import Edit, apply, edits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config_text
from gateway.config.yamlsource import MAX_VALUES

_FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TARGET = ConfigTarget()
TEXTS = [s[1:].decode() for s in TARGET.seeds()]

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["%any", "0x00ff", "10.0.0.0/8", "psk", "start",
                                                            "aes128gcm16", "tunnel", "192.0.2.1"]))
_keys = st.sampled_from(["gateway", "connections", "users", "pools", "auth", "psk", "remote", "ike",
                         "l2tp", "manual", "spi", "subnet", "name", "version", "proposals", "x"])
_documents = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(_keys, st.text(max_size=6)), inner, max_size=5)),
    max_leaves=25)


@_FUZZ
@given(st.sampled_from(TEXTS), edits(6))
def test_mutated_real_configs_load_or_raise_config_error(text: str, changes: list[Edit]) -> None:
    TARGET.check(apply(text.encode(), changes, [t.encode() for t in TEXTS]).decode("utf-8", "replace"))


@_FUZZ
@given(_documents)
def test_yamlish_documents_load_or_raise_config_error(document: object) -> None:
    TARGET.check(yaml.safe_dump(document))


@_FUZZ
@given(st.text(st.characters(codec="utf-8"), max_size=120))
def test_random_text_loads_or_raises_config_error(text: str) -> None:
    TARGET.check(text)


@_FUZZ
@given(st.sampled_from(TEXTS), st.integers(0, 10_000), st.sampled_from(
    ["!!int zz", "!!float x", "!!timestamp 2001-13-45", "!!binary ???", "!!python/object x", "\x07",
     "\x00", "&a [*a]", "*undefined", "!!set {a}", "{", "[", "'", "- x", "? [a]", "<<: {a: 1}"]))
def test_hostile_tokens_spliced_into_real_configs(text: str, position: int, token: str) -> None:
    at = position % (len(text) + 1)
    TARGET.check(text[:at] + token + text[at:])


def test_shipped_configs_still_load() -> None:
    for text in TEXTS:
        assert TARGET.check(text) is not None


# -- regressions found by the fuzzing --------------------------------------------------------


def _issue(text: str) -> str:
    try:
        load_config_text(text, "fuzz.yaml")
    except ConfigError as exc:
        return str(exc)
    raise AssertionError("loaded")


def test_regression_control_character_is_a_config_error() -> None:
    """yaml's ReaderError is no MarkedYAMLError: it escaped the loader."""
    assert _issue("gateway:\n  name: \x07") == "fuzz.yaml:2 YAML syntax: character #x0007 is not allowed"


def test_regression_unreadable_tagged_scalars_are_config_errors_without_the_value() -> None:
    """``!!int``/``!!float``/``!!timestamp`` with a bad value raised ValueError or
    AttributeError (the value, perhaps a secret, in the message)."""
    assert _issue("a: 1\npsk: !!int group-key-for-l2tp-Zk8") == "fuzz.yaml:2 not a valid int value"
    assert _issue("a: !!timestamp x") == "fuzz.yaml:1 not a valid timestamp value"
    assert _issue("a: 2001-13-45") == "fuzz.yaml:1 not a valid timestamp value"
    assert "could not determine a constructor" in _issue("a: !!python/object x")


def test_regression_self_referencing_alias_and_deep_nesting_are_config_errors() -> None:
    """RecursionError escaped the loader."""
    assert "nested too deeply" in _issue("a: &x [*x]")
    assert "nested too deeply" in _issue("a: " + "[" * 1200 + "]" * 1200)


def test_regression_billion_laughs_is_refused() -> None:
    """Aliases of aliases expanded without limit (9^7 values here: minutes and gigabytes)."""
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)]
    assert f"more than {MAX_VALUES} values" in _issue("\n".join(levels))


def test_the_secrets_config_is_a_valid_seed() -> None:
    assert load_config_text(SECRETS_CONFIG).config.users


def test_regression_a_secret_in_the_wrong_place_is_not_quoted() -> None:
    """A PSK that ended up as ``auth.method`` (a line edited wrong) was quoted back by
    pydantic's tagged-union message, into the log and the terminal."""
    text = SECRETS_CONFIG.replace("{method: psk, psk: group-key-for-l2tp-Zk8}",
                                  "{method: group-key-for-l2tp-Zk8}")
    message = _issue(text)
    assert "group-key" not in message
    assert "connections.dialin.auth: must be one of 'psk', 'cert'" in message
