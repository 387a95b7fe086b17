"""Config loading: defaults, file, env, --set; clear errors; the template matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeagent import config
from edgeagent.config.doc import example_toml
from edgeagent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('log_level = "debug"\n[audio]\nframe_ms = 30\ninput_device = "pulse"\n')
    cfg = config.load(f, env={"EDGEAGENT__AUDIO__FRAME_MS": "40"}, overrides=["audio.output_device=2"])
    assert cfg.log_level == "debug"
    assert cfg.audio.frame_ms == 40  # env beats the file
    assert cfg.audio.input_device == "pulse"
    assert cfg.audio.output_device == "2"
    cfg = config.load(f, env={"EDGEAGENT__AUDIO__FRAME_MS": "40"}, overrides=["audio.frame_ms=50"])
    assert cfg.audio.frame_ms == 50  # --set beats env


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert config.load(tmp_path / "absent.toml", env={}) == config.Config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audio]\nbogus = 1\n", "audio: unknown key(s) bogus"),
        ("[audio]\nframe_ms = \"x\"\n", "audio.frame_ms: expected an integer"),
        ("log_level = \"loud\"\n", "log_level: expected debug"),
        ("audio = 3\n", "audio: expected a table"),
        ("[audio\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(f, env={})


def test_merge_patch_rfc7386() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert config.merge(base, {"a": {"b": None, "e": 4}, "d": [1]}) == {"a": {"c": 2, "e": 4}, "d": [1]}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_example_template_is_current_and_loads(tmp_path: Path) -> None:
    committed = (ROOT / "edgeagent" / "config.example.toml").read_text()
    assert committed == example_toml(), "run: edgeagent config example > edgeagent/config.example.toml"
    # Every line uncommented is still a valid config equal to the defaults.
    lines = [ln[2:] if re.match(r"# \w+ = ", ln) else ln for ln in committed.splitlines()]
    f = tmp_path / "c.toml"
    f.write_text("\n".join(ln.split("  # unset")[0] for ln in lines))
    assert config.load(f, env={}) == config.Config()


def test_voice_sections_from_file_env_and_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[agent]\ninstructions = "Be brief."\n'
        '[activation]\nmode = "always"\nwake_words = ["alexa", "hey_mycroft"]\n'
        '[turn]\ndetection = "vad"\nmin_delay_s = 0.4\n'
        '[stt]\nprovider = "vosk"\npartials = false\n'
        '[tts]\nprovider = "espeak"\nspeed = 1.5\n'
    )
    env = {"EDGEAGENT__LLM__MAX_TOKENS": "60", "EDGEAGENT__ACTIVATION__WAKE_WORDS": "alexa"}
    overrides = ["interruption.enabled=off", "vad.activation_threshold=0.6", "audio.echo_cancellation=no"]
    cfg = config.load(f, env=env, overrides=overrides)
    assert cfg.agent.instructions == "Be brief."
    assert cfg.activation.mode == "always"
    assert cfg.activation.wake_words == ("alexa",)  # env beats the file; a comma list becomes a tuple
    assert (cfg.turn.detection, cfg.turn.min_delay_s, cfg.turn.max_delay_s) == ("vad", 0.4, 2.0)
    assert (cfg.stt.provider, cfg.stt.partials, cfg.stt.model) == ("vosk", False, None)
    assert (cfg.tts.provider, cfg.tts.speed) == ("espeak", 1.5)
    assert cfg.llm.max_tokens == 60
    assert cfg.interruption.enabled is False
    assert cfg.vad.activation_threshold == 0.6
    assert cfg.audio.echo_cancellation is False
    assert cfg.audio.noise_suppression is False


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["activation.mode=sometimes"], "activation.mode"),
        (["turn.detection=psychic"], "turn.detection"),
        (["turn.min_delay_s=3", "turn.max_delay_s=1"], "min_delay_s <= max_delay_s"),
        (["turn.min_delay_s=-0.1"], "min_delay_s <= max_delay_s"),
        (["turn.eot_threshold=1.5"], "turn.eot_threshold"),
        (["activation.wake_threshold=0"], "activation.wake_threshold"),
        (["activation.wake_words="], "activation.wake_words"),
        (["activation.listen_s=-1"], "activation.listen_s"),
        (["activation.follow_up_s=-1"], "activation.follow_up_s"),
        (["interruption.false_timeout_s=0"], "interruption"),
        (["llm.max_tokens=0"], "llm.max_tokens"),
        (["tts.speed=9"], "tts.speed"),
        (["llm.temperature=hot"], "llm.temperature: expected a number"),
        (["stt.partials=maybe"], "stt.partials: expected true or false"),
        (["tts.pitch=3"], "tts: unknown key(s) pitch"),
    ],
)
def test_bad_voice_config_names_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        config.load(None, env={}, overrides=overrides)


def test_validate_accepts_the_defaults_and_no_wake_word_outside_wake_mode() -> None:
    config.validate(config.Config())
    cfg = config.load(None, env={}, overrides=["activation.mode=ptt", "activation.wake_words="])
    assert cfg.activation.wake_words == ()


# -- [livekit] -----------------------------------------------------------------------------


def test_livekit_section_from_file_env_and_cli(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[livekit]\nurl = "ws://127.0.0.1:7880"\napi_key = "devkey"\napi_secret = "s3cret"\n'
                    'room = "kitchen"\nlisten = "identities"\nidentities = ["alice", "bob"]\n')
    cfg = config.load(path, env={"EDGEAGENT__LIVEKIT__MODE": "room+local"},
                      overrides=["livekit.token_ttl_s=300", "livekit.publish_local_mic=true"])
    lk = cfg.livekit
    assert (lk.url, lk.api_key, lk.room, lk.listen, lk.identities) == (
        "ws://127.0.0.1:7880", "devkey", "kitchen", "identities", ("alice", "bob"))
    assert (lk.mode, lk.token_ttl_s, lk.publish_local_mic, lk.enabled) == ("room+local", 300, True, True)
    assert lk.participant_identity.startswith("edgeagent-")
    assert not config.Config().livekit.enabled  # no url: no room


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["livekit.url=ws://h:7880"], "needs a token, or api_key and api_secret"),
        (["livekit.url=ws://h:7880", "livekit.api_key=k", "livekit.api_secret=s"], "livekit.room"),
        (["livekit.url=ftp://h", "livekit.token=t"], "livekit.url: expected ws://"),
        (["livekit.url=ws://h", "livekit.token=t", "livekit.api_key=k"], "either token or api_key"),
        (["livekit.listen=loudest"], "livekit.listen: expected one of linked, identities, all"),
        (["livekit.listen=identities"], "livekit.identities"),
        (["livekit.mode=local"], "livekit.mode"),
        (["livekit.publish_local_mic=true"], "livekit.publish_local_mic"),
        (["livekit.token_ttl_s=5"], "livekit.token_ttl_s"),
        (["livekit.e2ee_key=short"], "livekit.e2ee_key"),
        (["livekit.rooms=a"], "livekit: unknown key(s) rooms"),
    ],
)
def test_bad_livekit_config_names_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        config.load(None, env={}, overrides=overrides)
