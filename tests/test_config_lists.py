"""List settings given as text (``--set`` and ``EDGEAGENT__…``): every form the README documents
parses for every list field, and text that cannot be the list the field expects is refused at
start with the field named (issue 24: ``'["admin"]'`` once became one identity named ``["admin"]``)."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest

from edgeagent import config
from edgeagent.errors import ConfigError

# Each list field with items it accepts.
LIST_FIELDS: dict[str, tuple[str, ...]] = {
    "activation.wake_words": ("alexa", "hey_mycroft"),
    "activation.stop_words": ("stop", "never mind", "arrête"),
    "livekit.identities": ("alice", "bob-phone"),
    "control.allowed_identities": ("admin", "ops laptop"),
    "gpio.rgb_pins": ("17", "27", "GPIO22"),
    "web.ice_servers": ("stun:127.0.0.1:3478", "turn:10.0.0.1:3478?transport=udp"),
}


def list_fields() -> set[str]:
    """Every ``tuple[...]`` field of the config, found by walking the dataclasses."""
    found = set()
    for section in dataclasses.fields(config.Config):
        tp = typing.get_type_hints(config.Config)[section.name]
        if not dataclasses.is_dataclass(tp):
            continue
        for name, hint in typing.get_type_hints(tp).items():
            if typing.get_origin(hint) is tuple:
                found.add(f"{section.name}.{name}")
    return found


def get(cfg: config.Config, dotted: str) -> object:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def load_with(dotted: str, text: str, via: str) -> config.Config:
    if via == "set":
        return config.load(None, env={}, overrides=[f"{dotted}={text}"])
    return config.load(None, env={"EDGEAGENT__" + dotted.upper().replace(".", "__"): text})


def test_the_table_covers_every_list_field() -> None:
    assert list_fields() == set(LIST_FIELDS), "add the new list field to LIST_FIELDS"


def _toml(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


FORMS = {
    "toml-array": _toml,
    "toml-array-single-quotes": lambda items: "[" + ",".join(f"'{i}'" for i in items) + "]",
    "json-array": lambda items: json.dumps(list(items)),
    "commas": lambda items: ", ".join(items),
    "commas-no-spaces": lambda items: ",".join(items),
}


@pytest.mark.parametrize("via", ["set", "env"])
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("dotted", sorted(LIST_FIELDS))
def test_every_documented_form_parses(dotted: str, form: str, via: str) -> None:
    items = LIST_FIELDS[dotted]
    assert get(load_with(dotted, FORMS[form](items), via), dotted) == items


@pytest.mark.parametrize("via", ["set", "env"])
@pytest.mark.parametrize("dotted", sorted(set(LIST_FIELDS) - {"gpio.rgb_pins"}))  # an RGB LED has 3 pins
def test_one_item_in_either_form(dotted: str, via: str) -> None:
    item = LIST_FIELDS[dotted][0]
    assert get(load_with(dotted, f'["{item}"]', via), dotted) == (item,)
    assert get(load_with(dotted, item, via), dotted) == (item,)


@pytest.mark.parametrize("text", ["[]", "", "  [ ]  "])
@pytest.mark.parametrize("dotted", sorted(set(LIST_FIELDS) - {"activation.wake_words"}))
def test_empty_list(dotted: str, text: str) -> None:
    assert get(load_with(dotted, text, "set"), dotted) == ()


def test_the_issue_24_case_is_one_identity_named_admin() -> None:
    cfg = config.load(None, env={}, overrides=['control.allowed_identities=["admin"]'])
    assert cfg.control.allowed_identities == ("admin",)


def test_a_json_escape_is_read() -> None:
    cfg = config.load(None, env={}, overrides=['activation.stop_words=["caf\\u00e9", "say \\"no\\""]'])
    assert cfg.activation.stop_words == ("café", 'say "no"')


BAD = {
    "unclosed-array": ('["admin"', "is not a valid list"),
    "bare-words-in-brackets": ("[admin, ops]", "is not a valid list"),
    "quoted-item": ('"admin"', "has quotes or brackets"),
    "single-quoted-item": ("'admin'", "has quotes or brackets"),
    "stray-bracket": ("admin]", "has quotes or brackets"),
    "empty-item": ("admin,,ops", "an item is empty"),
    "trailing-comma": ("admin,", "an item is empty"),
    "empty-string-item": ('["admin", ""]', "an item is empty"),
    "blank-string-item": ('["admin", "  "]', "an item is empty"),
    "nested-array": ('[["admin"]]', "expected a string"),
    "boolean-item": ("[true]", "expected a string"),
    "table-item": ('[{a = "b"}]', "expected a string"),
    "text-after-array": ('["admin"] x', "is not a valid list"),
}


@pytest.mark.parametrize("via", ["set", "env"])
@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("dotted", sorted(LIST_FIELDS))
def test_a_bad_list_is_refused_naming_the_field(dotted: str, case: str, via: str) -> None:
    text, reason = BAD[case]
    with pytest.raises(ConfigError, match=re.escape(dotted) + r".*" + re.escape(reason)):
        load_with(dotted, text, via)


@pytest.mark.parametrize(
    ("dotted", "text", "message"),
    [
        ("gpio.rgb_pins", "17", "gpio.rgb_pins: expected 3 pins"),
        ("gpio.rgb_pins", '["17", "27"]', "gpio.rgb_pins: expected 3 pins"),
        ("web.ice_servers", '["127.0.0.1:3478"]', "web.ice_servers: expected stun:"),
        ("activation.wake_words", "[]", "activation.wake_words: wake mode needs at least one"),
    ],
)
def test_a_list_the_field_cannot_use_is_refused(dotted: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_with(dotted, text, "set")


def test_the_cli_refuses_at_start_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeagent.cli import main

    code = main(["config", "show", "--config", str(tmp_path / "none.toml"),
                 "--set", "control.allowed_identities=[admin]"])
    err = capsys.readouterr().err
    assert code == 2  # usage: a wrong setting, nothing started
    assert err.count("\n") == 1 and "control.allowed_identities" in err, err
