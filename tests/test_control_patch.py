"""Remote config, the pure layer: requests, merge patches, the allow-list, ranges, redaction, schema."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from edgeagent import config
from edgeagent.config.doc import field_docs
from edgeagent.config.voice import TTSConfig
from edgeagent.control import keys
from edgeagent.control.errors import ControlError, Problem
from edgeagent.control.patch import (
    NEEDS_RELOAD,
    SECRETS,
    SETTABLE,
    Change,
    apply_patch,
    compose,
    parse_payload,
    parse_set_request,
    redact,
    schema,
)
from edgeagent.errors import ConfigError

BASE = config.Config()


def problems(exc: pytest.ExceptionInfo[ControlError]) -> list[tuple[str, str]]:
    return [(p.path, p.code) for p in exc.value.problems]


def refused(patch: Any, *, current: config.Config = BASE, allow_secrets: bool = False) -> list[tuple[str, str]]:
    with pytest.raises(ControlError) as exc:
        apply_patch(current, patch, allow_secrets=allow_secrets)
    return problems(exc)


# -- the request envelope -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{", "not_json"),
        (b"hello", "not_json"),
        (b"\xff\xfe{}", "not_json"),
        ('{"v": 1, "x": NaN}', "not_json"),
        ('{"v": 1, "x": Infinity}', "not_json"),
        ('{"v": 1, "v": 1}', "bad_shape"),
        ("[1, 2]", "bad_shape"),
        ('"a string"', "bad_shape"),
        ("42", "bad_shape"),
        ("null", "bad_shape"),
        ("[" * 100_000 + "]" * 100_000, "bad_shape"),
        ("{}", "unsupported_version"),
        ('{"v": 2}', "unsupported_version"),
        ('{"v": "1"}', "unsupported_version"),
        ('{"v": true}', "unsupported_version"),
        ('{"v": 1.0}', "unsupported_version"),
    ],
)
def test_parse_payload_refuses(payload: bytes | str, code: str) -> None:
    with pytest.raises(ControlError) as exc:
        parse_payload(payload, max_bytes=1_000_000)
    assert exc.value.code == code, exc.value


def test_parse_payload_bounds_the_size_before_parsing() -> None:
    body = json.dumps({"v": 1, "patch": {"agent": {"instructions": "x" * 20_000}}})
    with pytest.raises(ControlError) as exc:
        parse_payload(body)  # the default limit: 16 KiB
    assert problems(exc) == [("", "too_large")]
    assert "16384" in str(exc.value)
    assert parse_payload(body.encode(), max_bytes=len(body))["v"] == 1
    with pytest.raises(ControlError, match="limit is 99"):
        parse_payload("é" * 50, max_bytes=99)  # bytes, not characters


def test_parse_payload_accepts_a_request() -> None:
    req = parse_payload(b'{"v": 1, "patch": {"tts": {"speed": 1.5}}, "base_revision": 3}')
    assert parse_set_request(req) == ({"tts": {"speed": 1.5}}, 3)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"v": 1, "base_revision": 0}, [("patch", "missing")]),
        ({"v": 1, "patch": {}}, [("base_revision", "missing")]),
        ({"v": 1, "patch": [], "base_revision": 0}, [("patch", "bad_shape")]),
        ({"v": 1, "patch": {}, "base_revision": "3"}, [("base_revision", "wrong_type")]),
        ({"v": 1, "patch": {}, "base_revision": True}, [("base_revision", "wrong_type")]),
        ({"v": 1, "patch": {}, "base_revision": -1}, [("base_revision", "out_of_range")]),
        ({"v": 1, "patch": "x", "base_revision": 1.5, "force": True},
         [("force", "unknown_key"), ("patch", "bad_shape"), ("base_revision", "wrong_type")]),
    ],
)
def test_parse_set_request_names_each_problem(request_: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    with pytest.raises(ControlError) as exc:
        parse_set_request(request_)
    assert problems(exc) == expected


# -- refused patches ----------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [[{"tts": {"speed": 1}}], "tts.speed=1", 3, None])
def test_a_patch_must_be_an_object(patch: Any) -> None:
    assert refused(patch) == [("", "bad_shape")]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"bogus": {"x": 1}}, [("bogus", "unknown_key")]),
        ({"tts": {"pitch": 3}}, [("tts.pitch", "unknown_key")]),
        ({"v": 1}, [("v", "unknown_key")]),  # the envelope is not the patch
        ({"tts": {"speed": "1.2"}}, [("tts.speed", "wrong_type")]),  # no coercion from strings
        ({"tts": {"speed": True}}, [("tts.speed", "wrong_type")]),  # a bool is not a number
        ({"llm": {"max_tokens": True}}, [("llm.max_tokens", "wrong_type")]),
        ({"llm": {"max_tokens": 100.0}}, [("llm.max_tokens", "wrong_type")]),
        ({"llm": {"max_tokens": "100"}}, [("llm.max_tokens", "wrong_type")]),
        ({"agent": {"name": 5}}, [("agent.name", "wrong_type")]),
        ({"activation": {"wake_words": "alexa"}}, [("activation.wake_words", "wrong_type")]),
        ({"activation": {"wake_words": ["alexa", 7]}}, [("activation.wake_words[1]", "wrong_type")]),
        ({"activation": {"mode": ["wake"]}}, [("activation.mode", "wrong_type")]),
        ({"tts": 1.5}, [("tts", "wrong_type")]),
        ({"tts": [1.5]}, [("tts", "wrong_type")]),
        ({"tts": {"speed": 9}}, [("tts.speed", "out_of_range")]),
        ({"tts": {"speed": 0.1}}, [("tts.speed", "out_of_range")]),
        ({"tts": {"speed": 1e400}}, [("tts.speed", "out_of_range")]),  # inf
        ({"tts": {"speed": 10**400}}, [("tts.speed", "out_of_range")]),  # too big for a float
        ({"llm": {"temperature": 2.5}}, [("llm.temperature", "out_of_range")]),
        ({"llm": {"temperature": -0.1}}, [("llm.temperature", "out_of_range")]),
        ({"llm": {"max_tokens": 0}}, [("llm.max_tokens", "out_of_range")]),
        ({"llm": {"max_tokens": 4097}}, [("llm.max_tokens", "out_of_range")]),
        ({"activation": {"wake_threshold": 0}}, [("activation.wake_threshold", "out_of_range")]),
        ({"activation": {"wake_threshold": 1}}, [("activation.wake_threshold", "out_of_range")]),
        ({"activation": {"listen_s": -1}}, [("activation.listen_s", "out_of_range")]),
        ({"turn": {"eot_threshold": 1.5}}, [("turn.eot_threshold", "out_of_range")]),
        ({"turn": {"max_speech_s": 0}}, [("turn.max_speech_s", "out_of_range")]),
        ({"audio": {"output_volume": 2.5}}, [("audio.output_volume", "out_of_range")]),
        ({"audio": {"output_volume": -0.1}}, [("audio.output_volume", "out_of_range")]),
        ({"activation": {"mode": "sometimes"}}, [("activation.mode", "out_of_range")]),
        ({"turn": {"detection": "psychic"}}, [("turn.detection", "out_of_range")]),
        ({"livekit": {"listen": "loudest"}}, [("livekit.listen", "out_of_range")]),
        ({"tts": {"provider": "polly"}}, [("tts.provider", "out_of_range")]),
        ({"stt": {"provider": "cloud"}}, [("stt.provider", "out_of_range")]),
        ({"agent": {"name": ""}}, [("agent.name", "bad_value")]),
        ({"agent": {"name": "x" * 65}}, [("agent.name", "bad_value")]),
        ({"agent": {"instructions": "a\x00b"}}, [("agent.instructions", "bad_value")]),
        ({"activation": {"wake_words": ["alexa", "alexa"]}}, [("activation.wake_words", "bad_value")]),
        ({"livekit": {"identities": [""]}}, [("livekit.identities[0]", "bad_value")]),
        ({"llm": {"model": ""}}, [("llm.model", "bad_value")]),
        ({"audio": {"input_device": "usb"}}, [("audio.input_device", "read_only")]),
        ({"audio": {"frame_ms": 30}}, [("audio.frame_ms", "read_only")]),
        ({"models": {"dir": "/tmp"}}, [("models.dir", "read_only")]),
        ({"livekit": {"url": "ws://evil:7880"}}, [("livekit.url", "read_only")]),
        ({"control": {"allow_secrets": True}}, [("control.allow_secrets", "read_only")]),
        ({"control": {"allowed_identities": ["mallory"]}}, [("control.allowed_identities", "read_only")]),
        ({"stt": {"model": "/tmp/x"}}, [("stt.model", "read_only")]),
        ({"interruption": {"min_duration_s": 20.0}}, [("interruption.min_duration_s", "out_of_range")]),
        ({"log_level": "debug"}, [("log_level", "read_only")]),
        ({"audio": {"frame_ms": "oops"}}, [("audio.frame_ms", "read_only")]),  # read-only before its type
        ({"livekit": {"token": "eyJhbGciOi"}}, [("livekit.token", "secret_not_allowed")]),
        ({"livekit": {"api_secret": "s3cret"}}, [("livekit.api_secret", "secret_not_allowed")]),
        ({"livekit": {"e2ee_key": "a-shared-key"}}, [("livekit.e2ee_key", "secret_not_allowed")]),
        ({"activation": {"wake_words": []}}, [("activation.wake_words", "invalid")]),  # wake mode needs one
        ({"turn": {"min_delay_s": 3, "max_delay_s": 1}}, [("turn", "invalid")]),
        ({"livekit": {"listen": "identities"}}, [("livekit.identities", "invalid")]),
    ],
)
def test_bad_patch_gets_a_structured_error(patch: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert refused(patch) == expected


def test_every_problem_is_reported_at_once() -> None:
    patch = {
        "tts": {"speed": "fast", "pitch": 2},
        "llm": {"temperature": 5, "max_tokens": 64},
        "audio": {"output_device": "hdmi"},
        "livekit": {"token": "t"},
        "nonsense": None,
    }
    with pytest.raises(ControlError) as exc:
        apply_patch(BASE, patch, allow_secrets=False)
    assert problems(exc) == [
        ("tts.speed", "wrong_type"),
        ("tts.pitch", "unknown_key"),
        ("llm.temperature", "out_of_range"),
        ("audio.output_device", "read_only"),
        ("livekit.token", "secret_not_allowed"),
        ("nonsense", "unknown_key"),
    ]
    reply = exc.value.to_dict()
    assert reply["code"] == "wrong_type"
    assert reply["problems"][2] == {"path": "llm.temperature", "code": "out_of_range",
                                    "reason": "expected >= 0 and <= 2, got 5.0"}
    assert "known: provider, model, speed" in reply["problems"][1]["reason"]
    json.dumps(reply)


def test_read_only_settings_may_be_sent_unchanged() -> None:
    current = config.load(None, env={}, overrides=["audio.frame_ms=30"])
    new, changes = apply_patch(current, {"audio": {"frame_ms": 30, "output_volume": 0.5}}, allow_secrets=False)
    assert (new.audio.frame_ms, new.audio.output_volume) == (30, 0.5)
    assert changes == [Change("audio.output_volume", 1.0, 0.5)]


def test_resetting_a_section_may_not_reset_its_read_only_settings() -> None:
    current = config.load(None, env={}, overrides=["audio.frame_ms=30", "audio.output_volume=0.5"])
    assert refused({"audio": None}, current=current) == [("audio.frame_ms", "read_only")]
    current = config.load(None, env={}, overrides=["audio.output_volume=0.5"])
    new, changes = apply_patch(current, {"audio": None}, allow_secrets=False)
    assert new == BASE
    assert changes == [Change("audio.output_volume", 0.5, 1.0)]


# -- accepted patches ---------------------------------------------------------------------------


def test_merge_patch_sets_and_resets_to_the_default() -> None:
    current = config.load(None, env={}, overrides=[
        "tts.speed=1.5", "llm.temperature=0.7", "agent.name=kitchen", "activation.wake_words=alexa,hey_mycroft"])
    patch = {"tts": {"speed": None, "provider": "espeak"}, "llm": {"max_tokens": 64},
             "activation": {"wake_words": ["hey_rhasspy"], "wake_threshold": 0.7}, "agent": {}}
    new, changes = apply_patch(current, patch, allow_secrets=False)
    assert new.tts == TTSConfig(provider="espeak", speed=1.0)  # null: the default, not the old value
    assert (new.llm.temperature, new.llm.max_tokens) == (0.7, 64)  # untouched keys stay
    assert new.agent.name == "kitchen"
    assert new.activation.wake_words == ("hey_rhasspy",)  # a list is replaced whole
    assert new.activation.wake_threshold == 0.7
    assert current.tts.speed == 1.5  # the input is never changed
    assert [(c.path, c.old, c.new, c.needs_reload) for c in changes] == [
        ("activation.wake_words", ["alexa", "hey_mycroft"], ["hey_rhasspy"], False),
        ("activation.wake_threshold", 0.1, 0.7, False),
        ("llm.max_tokens", 120, 64, False),
        ("tts.provider", "piper", "espeak", True),
        ("tts.speed", 1.5, 1.0, False),
    ]
    new, changes = apply_patch(new, {"tts": None}, allow_secrets=False)
    assert new.tts == TTSConfig()
    assert [c.path for c in changes] == ["tts.provider"]


def test_numbers_are_numbers_whatever_json_wrote() -> None:
    new, _ = apply_patch(BASE, {"tts": {"speed": 2}, "audio": {"output_volume": 0}}, allow_secrets=False)
    assert new.tts.speed == 2.0 and isinstance(new.tts.speed, float)
    assert new.audio.output_volume == 0.0 and isinstance(new.audio.output_volume, float)


def test_an_empty_or_no_op_patch_changes_nothing() -> None:
    assert apply_patch(BASE, {}, allow_secrets=False) == (BASE, [])
    assert apply_patch(BASE, {"tts": {"speed": 1.0}, "agent": None}, allow_secrets=False) == (BASE, [])


def test_secrets_when_allowed_are_shown_as_stars() -> None:
    new, changes = apply_patch(BASE, {"livekit": {"e2ee_key": "a-long-shared-key"}}, allow_secrets=True)
    assert new.livekit.e2ee_key == "a-long-shared-key"
    assert changes == [Change("livekit.e2ee_key", None, "***")]
    assert changes[0].needs_reload
    # The redacted value sent back (a form returning what get showed) keeps the secret.
    again, changes = apply_patch(new, {"livekit": {"e2ee_key": "***", "listen": "all"}}, allow_secrets=False)
    assert again.livekit.e2ee_key == "a-long-shared-key"
    assert changes == [Change("livekit.listen", "linked", "all")]
    _, changes = apply_patch(new, {"livekit": {"e2ee_key": None}}, allow_secrets=True)
    assert changes == [Change("livekit.e2ee_key", "***", None)]
    # Checks across fields still apply to secrets.
    assert refused({"livekit": {"e2ee_key": "short"}}, allow_secrets=True) == [("livekit.e2ee_key", "invalid")]


# -- what may be changed ------------------------------------------------------------------------


def test_the_allow_list() -> None:
    assert {"agent.name", "agent.instructions", "tts.model", "tts.speed", "activation.mode",
            "activation.wake_words", "activation.wake_threshold", "activation.listen_s", "activation.follow_up_s",
            "activation.stop_words", "llm.model", "llm.temperature", "llm.max_tokens", "vad.provider",
            "stt.provider", "llm.provider", "tts.provider", "audio.output_volume", "livekit.listen",
            "livekit.identities"} <= SETTABLE
    assert {p for p in keys.LEAVES if p.startswith("turn.")} <= SETTABLE
    assert {"livekit.api_key", "livekit.api_secret", "livekit.token", "livekit.e2ee_key", "cloud.api_key",
            "home_assistant.token"} == SECRETS
    assert SECRETS <= SETTABLE
    for path in ("audio.input_device", "audio.output_device", "models.dir", "livekit.url", "livekit.room",
                 "livekit.identity", "stt.model", "log_level", *(p for p in keys.LEAVES if p.startswith("control."))):
        assert path not in SETTABLE, path
    assert {"llm.model", "tts.model", "vad.provider", "stt.provider", "llm.provider", "tts.provider"} <= NEEDS_RELOAD
    for hot in ("agent.instructions", "agent.name", "tts.speed", "activation.wake_threshold", "audio.output_volume",
                "turn.min_delay_s", "livekit.listen", "llm.temperature"):
        assert hot not in NEEDS_RELOAD, hot


def test_each_setting_is_declared_once_and_every_settable_one_has_an_apply_path() -> None:
    """The allow-list, the hot and reload sets, the secrets and the limits all come from the
    field declarations (edgeagent.config.settings); a hot setting that no LiveApplier method puts
    into effect is caught (here, and at import of edgeagent.control.live)."""
    from edgeagent.control import live

    assert keys.SETTABLE == keys.HOT | keys.NEEDS_RELOAD and not keys.HOT & keys.NEEDS_RELOAD
    assert live.unapplied(keys.HOT) == set()
    assert live.unapplied({"turn.min_delay_s", "interruption.enabled", "audio.frame_ms"}) == {"audio.frame_ms"}
    for path in keys.NEEDS_RELOAD - keys.CREDENTIALS:  # a reload swaps a stage, and a change is one
        kind, name = path.split(".")
        assert kind in live.STAGE_KINDS, path
        cfg = config.Config()
        value = getattr(getattr(cfg, kind), name)
        other = dataclasses.replace(getattr(cfg, kind), **{name: not value if isinstance(value, bool) else
                                                            value + 1 if isinstance(value, int | float) else
                                                            f"{value}-other"})
        assert live.reload_key(dataclasses.replace(cfg, **{kind: other}), kind) != live.reload_key(cfg, kind), path
    assert {"web.password", "web.turn_credential"} == keys.HIDDEN
    assert not keys.HIDDEN & keys.SETTABLE
    # The limits a controller meets are the ones the file and --set meet, in the same words.
    with pytest.raises(ConfigError, match=re.escape("tts.speed: expected >= 0.25 and <= 4, got 0.1")):
        config.load(None, env={}, overrides=["tts.speed=0.1"])
    with pytest.raises(ControlError) as err:
        apply_patch(config.Config(), {"tts": {"speed": 0.1}}, allow_secrets=False)
    assert err.value.problems == [Problem("tts.speed", "out_of_range", "expected >= 0.25 and <= 4, got 0.1")]
    with pytest.raises(ConfigError, match=re.escape("stt.provider: expected one of openai, vosk, whisper")):
        config.load(None, env={}, overrides=["stt.provider=kaldi"])


def test_redact_hides_set_secrets_only() -> None:
    cfg = config.load(None, env={}, overrides=[
        "livekit.url=ws://h:7880", "livekit.api_key=devkey", "livekit.api_secret=s3cret", "livekit.room=kitchen"])
    plain = config.to_dict(cfg)
    shown = redact(plain)
    assert (shown["livekit"]["api_key"], shown["livekit"]["api_secret"]) == ("***", "***")
    assert (shown["livekit"]["token"], shown["livekit"]["e2ee_key"]) == (None, None)  # unset: nothing to hide
    assert shown["livekit"]["url"] == "ws://h:7880"
    assert shown["activation"]["wake_words"] == ["hey_jarvis"]
    assert plain["livekit"]["api_secret"] == "s3cret"  # a copy
    assert "s3cret" not in json.dumps(shown) and "devkey" not in json.dumps(shown)


def test_schema_describes_the_settable_settings() -> None:
    s = schema()
    json.dumps(s)
    assert s["v"] == 1 and s["secrets_allowed"] is False
    found = {f"{sec}.{name}": node for sec, t in s["properties"].items() for name, node in t["properties"].items()}
    assert set(found) == SETTABLE
    speed = found["tts.speed"]
    assert speed["description"] == field_docs(TTSConfig)["speed"]
    assert (speed["type"], speed["default"], speed["minimum"], speed["maximum"]) == ("number", 1.0, 0.25, 4.0)
    assert found["activation.mode"]["enum"] == ["wake", "ptt", "always"]
    assert found["activation.wake_threshold"]["exclusiveMinimum"] == 0.0
    assert found["llm.max_tokens"] == found["llm.max_tokens"] | {"type": "integer", "minimum": 1, "maximum": 4096}
    assert found["llm.model"]["type"] == ["string", "null"] and found["llm.model"]["needs_reload"] is True
    assert found["activation.wake_words"]["items"]["type"] == "string"
    assert found["livekit.token"] | {"secret": True, "writable": False} == found["livekit.token"]
    assert found["agent.name"]["writable"] is True and found["agent.name"]["secret"] is False
    assert schema(allow_secrets=True)["properties"]["livekit"]["properties"]["token"]["writable"] is True
    assert s["properties"]["tts"]["description"] == "Text to speech."
    assert all(node["description"] for node in found.values())


def test_control_error_needs_a_problem() -> None:
    with pytest.raises(ValueError):
        ControlError([])
    err = ControlError([Problem("a.b", "bad_value", "no")], revision=4)
    assert err.to_dict() == {"code": "bad_value", "message": "a.b: no", "revision": 4,
                             "problems": [{"path": "a.b", "code": "bad_value", "reason": "no"}]}


def test_compose_is_one_patch_then_the_other() -> None:
    first = {"tts": {"speed": 1.5, "model": None}, "agent": {"name": "a"}}
    second = {"tts": {"speed": None, "provider": "espeak"}, "llm": {"max_tokens": 9}}
    both = compose(first, second)
    assert both == {"tts": {"speed": None, "model": None, "provider": "espeak"}, "agent": {"name": "a"},
                    "llm": {"max_tokens": 9}}
    assert first == {"tts": {"speed": 1.5, "model": None}, "agent": {"name": "a"}}
    tree = config.to_dict(BASE)
    assert config.merge(tree, both) == config.merge(config.merge(tree, first), second)


# -- the [control] section and audio.output_volume in the config file ----------------------------


def test_control_section_from_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[control]\nallowed_identities = ["alice"]\nallowed_attribute = "edgeagent.role=admin"\n'
                 "restrict_get = true\nrate_per_minute = 60\n[audio]\noutput_volume = 0.8\n")
    cfg = config.load(f, env={})
    assert cfg.control.allowed_identities == ("alice",)
    assert cfg.control.allowed_attribute == "edgeagent.role=admin"
    assert (cfg.control.enabled, cfg.control.restrict_get, cfg.control.allow_secrets) == (True, True, False)
    assert (cfg.control.max_payload_bytes, cfg.control.rate_per_minute, cfg.control.rate_burst) == (16384, 60, 10)
    assert cfg.audio.output_volume == 0.8


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["audio.output_volume=2.5"], "audio.output_volume"),
        (["audio.output_volume=nan"], "audio.output_volume"),
        (["control.allowed_attribute=admin"], "control.allowed_attribute: expected NAME=VALUE"),
        (["control.max_payload_bytes=10"], "control.max_payload_bytes"),
        (["control.rate_per_minute=0"], "control.rate_per_minute"),
        (["control.rate_burst=0"], "control.rate_burst"),
        (["control.enabled=sometimes"], "control.enabled: expected true or false"),
    ],
)
def test_bad_control_config_names_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        config.load(None, env={}, overrides=overrides)


def test_an_empty_allowed_identity_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[control]\nallowed_identities = ["alice", " "]\n')
    with pytest.raises(ConfigError, match=r"control\.allowed_identities: an item is empty"):
        config.load(f, env={})
