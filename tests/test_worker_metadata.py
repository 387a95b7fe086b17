"""A dispatch's metadata as settings for one job: checked like remote config, bad entries dropped one by one."""

from __future__ import annotations

import dataclasses
import json

from edgeagent.config import Config
from edgeagent.config.voice import STTConfig
from edgeagent.control.errors import Problem
from edgeagent.worker.link import agent_url
from edgeagent.worker.metadata import apply_job_settings, job_settings, split_voice


def _codes(problems: list[Problem]) -> dict[str, str]:
    return {p.path: p.code for p in problems}


def test_good_entries_apply_and_each_bad_one_is_a_problem() -> None:
    cfg = Config()
    meta = {"instructions": "Talk like a pirate.", "tts": {"speed": 1.5, "pitch": 2}, "turn": {"min_delay_s": "x"},
            "voice": "en_GB-alan", "language": "de", "llm": {"model": "/x.gguf"}, "livekit": {"api_secret": "s"},
            "nonsense": 1}
    patch, problems = job_settings(cfg, json.dumps(meta))
    assert patch == {"agent": {"instructions": "Talk like a pirate."}, "tts": {"speed": 1.5, "model": "en_GB-alan"}}
    assert _codes(problems) == {
        "tts.pitch": "unknown_key", "turn.min_delay_s": "wrong_type", "language": "out_of_range",
        "llm.model": "read_only", "livekit.api_secret": "secret_not_allowed", "nonsense": "unknown_key"}
    language = next(p for p in problems if p.path == "language")
    assert "English-only" in language.reason and "'de'" in language.reason, language
    rest, voice = split_voice(patch)  # the voice is loaded for the job (edgeagent/worker/voice.py)
    assert voice == {"model": "en_GB-alan"} and rest == {"agent": {"instructions": "Talk like a pirate."},
                                                         "tts": {"speed": 1.5}}
    job = apply_job_settings(cfg, rest)
    assert job.agent.instructions == "Talk like a pirate." and job.tts.speed == 1.5
    assert cfg.tts.speed == 1.0  # the device's own config is not changed


def test_the_voice_and_the_language() -> None:
    cfg = Config()
    patch, problems = job_settings(cfg, json.dumps({"tts": {"provider": "espeak"}, "voice": "en-gb",
                                                    "language": "en-GB"}))
    assert problems == [] and split_voice(patch) == ({}, {"provider": "espeak", "model": "en-gb"})
    patch, problems = job_settings(cfg, json.dumps({"tts": {"provider": "festival"}, "language": 7}))
    assert patch == {} and _codes(problems) == {"tts.provider": "out_of_range", "language": "wrong_type"}
    vosk = dataclasses.replace(cfg, stt=STTConfig(provider="vosk"))
    _, problems = job_settings(vosk, json.dumps({"language": "fr"}))
    assert _codes(problems) == {"language": "out_of_range"} and "vosk" in problems[0].reason, problems


def test_no_metadata_plain_text_and_out_of_range() -> None:
    cfg = Config()
    assert job_settings(cfg, "") == ({}, [])
    patch, problems = job_settings(cfg, "call me back")
    assert patch == {} and _codes(problems) == {"": "not_json"}
    patch, problems = job_settings(cfg, "[1, 2]")
    assert patch == {} and _codes(problems) == {"": "bad_shape"}
    patch, problems = job_settings(cfg, json.dumps({"tts": {"speed": 99}}))
    assert patch == {} and _codes(problems) == {"tts.speed": "out_of_range"}


def test_agent_url() -> None:
    assert agent_url("ws://127.0.0.1:7880") == "ws://127.0.0.1:7880/agent"
    assert agent_url("https://lk.example.com/") == "wss://lk.example.com/agent"
    assert agent_url("http://host:7880/base") == "ws://host:7880/base/agent"
