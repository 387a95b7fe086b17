"""A provider is its module, one registry line and its extra: the stage contract carries the rest.

:class:`ChirpTTS` below is a whole TTS provider as a new one would be written (here in the test
file, where a real one would be ``edgeagent/tts/chirp.py``): it declares its options and how it
follows a live ``tts.speed`` through the contract of :class:`edgeagent.tts.base.TTS`, and is
registered through :func:`edgeagent.registry.register` alone. The config then chooses it, the
stages are made from it as ``Models.load`` makes them, and a remote ``tts.speed`` reaches it
through the real :class:`~edgeagent.control.store.ConfigStore` and
:class:`~edgeagent.control.live.LiveApplier`. No model is loaded: these tests take milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent import registry
from edgeagent.audio.frame import Int16Array
from edgeagent.audio.wav import WavFileOutput
from edgeagent.config import Config, load
from edgeagent.control import keys, live
from edgeagent.control.errors import ControlError
from edgeagent.control.live import LiveApplier
from edgeagent.control.store import ConfigStore
from edgeagent.errors import ConfigError
from edgeagent.llm.base import LLM
from edgeagent.stage import Stage
from edgeagent.tts.base import TTS
from edgeagent.tts.streaming import ClauseTTS
from edgeagent.voice.compose import session_for
from edgeagent.voice.stages import Models, check_loadable, create_stage, stage_specs

RATE = 16_000
WORD_S = 0.1
"""A chirp per word, this long at speed 1.0."""


class ChirpTTS(ClauseTTS):
    """A chirp per word, ``WORD_S / speed`` seconds each; ``model`` is its pitch in Hz. The
    options it takes from ``[tts]`` (``speed``, ``model``) are those every voice takes
    (:meth:`TTS.config_options`); ``speed_change`` is how it follows ``tts.speed`` live."""

    provider = "chirp"

    def __init__(self, *, speed: float = 1.0, model: str | None = None) -> None:
        super().__init__()
        self.speed = speed
        self.pitch = float(model or 440)

    @property
    def sample_rate(self) -> int:
        return RATE

    def speed_change(self, speed: float) -> Callable[[], None]:
        return lambda: setattr(self, "speed", speed)

    async def _clause_audio(self, text: str) -> AsyncGenerator[Int16Array, None]:
        t = np.arange(round(WORD_S / self.speed * RATE)) / RATE
        chirp = (8000 * np.sin(2 * np.pi * self.pitch * t)).astype(np.int16)
        for _ in text.split():
            yield chirp


class StiffTTS(ChirpTTS):
    """A voice that cannot change its speed while it runs (the contract's default)."""

    provider = "stiff"

    def speed_change(self, speed: float) -> Callable[[], None]:
        return TTS.speed_change(self, speed)


@pytest.fixture
def chirp() -> Iterator[None]:
    registry.register("tts", "chirp", f"{__name__}:ChirpTTS")
    registry.register("tts", "stiff", f"{__name__}:StiffTTS")
    yield
    registry.unregister("tts", "chirp")
    registry.unregister("tts", "stiff")


def voice_of(cfg: Config) -> Any:
    """The voice ``cfg`` chooses, made as Models.load and a live reload make it."""
    check_loadable(cfg, "tts")
    (kind, name, options), = [spec for spec in stage_specs(cfg) if spec[0] == "tts"]
    return create_stage(kind, name, options)


async def spoken_s(voice: TTS, text: str) -> float:
    """Seconds of audio ``voice`` streams for ``text`` (as a reply streams it)."""
    stream = voice.stream()
    stream.push(text)
    stream.flush()
    stream.end_input()
    samples = 0
    async for chunk in stream:
        samples += len(chunk.frame.samples)
    return samples / voice.sample_rate


async def test_a_registered_voice_is_chosen_by_the_config_and_follows_a_live_speed(
        chirp: None, models: Models, tmp_path: Path) -> None:
    cfg = load(None, env={}, overrides=["tts.provider=chirp", "tts.speed=2", "tts.model=880"])
    voice = voice_of(cfg)
    assert isinstance(voice, ChirpTTS) and (voice.speed, voice.pitch) == (2.0, 880.0)
    assert await asyncio.wait_for(spoken_s(voice, "one two three four"), 10) == pytest.approx(4 * WORD_S / 2)

    store = ConfigStore.open(cfg, tmp_path / "remote-config.json")
    loaded = dataclasses.replace(models, tts=voice)  # the real default models, this voice among them
    applier = LiveApplier(session_for(loaded, cfg, echo_path=False), loaded, WavFileOutput(tmp_path / "out.wav", 16000),
                          store.config)
    revision, changes = await asyncio.wait_for(store.set({"tts": {"speed": 0.5}}, 0, applier), 10)
    assert revision == 1 and [(c.path, c.needs_reload) for c in changes] == [("tts.speed", False)]
    assert voice.speed == 0.5 and applier.config.tts.speed == 0.5
    assert await asyncio.wait_for(spoken_s(voice, "one two three four"), 10) == pytest.approx(4 * WORD_S / 0.5)

    with pytest.raises(ConfigError, match=re.escape("expected one of chirp, espeak, openai, piper, stiff")):
        load(None, env={}, overrides=["tts.provider=beep"])


async def test_a_voice_that_cannot_follow_a_live_speed_refuses_it_and_nothing_changes(
        chirp: None, models: Models, tmp_path: Path) -> None:
    cfg = load(None, env={}, overrides=["tts.provider=stiff"])
    voice = voice_of(cfg)
    store = ConfigStore.open(cfg, tmp_path / "remote-config.json")
    loaded = dataclasses.replace(models, tts=voice)
    applier = LiveApplier(session_for(loaded, cfg, echo_path=False), loaded, WavFileOutput(tmp_path / "out.wav", 16000),
                          store.config)
    with pytest.raises(ControlError, match="cannot change its speed while it runs"):
        await asyncio.wait_for(store.set({"tts": {"speed": 1.5}}, 0, applier), 10)
    assert voice.speed == 1.0 and store.revision == 0 and store.config.tts.speed == 1.0


def test_every_hot_setting_of_a_stage_is_one_its_kind_follows_live() -> None:
    """A hot ``[llm]``/``[tts]``/``[stt]``/``[vad]`` setting is put into effect by the running
    stage's ``update_options``: its kind's contract must list it in ``hot_options`` (else
    LiveApplier has no path for it and this test, and the import of control.live, fail)."""
    stage_kinds = {"vad", "stt", "llm", "tts"}
    hot_in_stages = {p for p in keys.HOT if p.split(".", 1)[0] in stage_kinds}
    assert hot_in_stages == set(LLM.hot_options + TTS.hot_options)
    assert {"llm.temperature", "llm.max_tokens", "tts.speed"} <= hot_in_stages
    assert live.unapplied(keys.HOT) == set()
    assert live.unapplied({"tts.pitch"}) == {"tts.pitch"}  # a new hot field alone is caught
    assert Stage.hot_options == ()


def test_cloud_providers_take_their_options_from_the_config_like_the_rest() -> None:
    """``[cloud]`` names the models; each cloud provider says what it takes from the config,
    and fallback.build creates it through the registry."""
    from edgeagent.fallback.build import CLOUD_PROVIDER

    cfg = load(None, env={}, overrides=["cloud.llm_model=m1", "cloud.tts_model=t1", "cloud.base_url=http://h/v1",
                                        "cloud.tts_base_url=http://t/v1", "tts.speed=1.5", "cloud.timeout_s=3"])
    llm = registry.provider_class("llm", CLOUD_PROVIDER).config_options(cfg)
    tts = registry.provider_class("tts", CLOUD_PROVIDER).config_options(cfg)
    assert (llm["model"], llm["base_url"], llm["first_byte_s"]) == ("m1", "http://h/v1", 3.0)
    assert (tts["model"], tts["base_url"], tts["speed"]) == ("t1", "http://t/v1", 1.5)
