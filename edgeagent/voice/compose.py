"""The one way a session is made from the loaded models and the config in effect.

``edgeagent run`` (sound card or WAV files), ``join`` (a room), ``web`` (the browser) and
the satellite all build their :class:`~edgeagent.voice.session.AgentSession` here; what
differs between them is only whether the agent's voice can reach its own microphone
(``echo_path``) and whether anyone says a wake word there (:func:`without_wake_word`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from edgeagent.voice.stages import Models, wake_for

if TYPE_CHECKING:
    from edgeagent.config import Config
    from edgeagent.voice.session import AgentSession

log = logging.getLogger(__name__)


def session_for(models: Models, cfg: Config, *, echo_path: bool) -> AgentSession:
    """The session on ``models`` with ``cfg``'s activation, turn and interruption options.

    ``echo_path``: the agent's voice can reach its microphone (a sound card in a room):
    echo cancellation as configured (with ``audio.noise_suppression``) and, without it, the
    mic ignored while the agent speaks. Without one (a WAV file, a LiveKit room, a browser
    that cancels its own echo) neither is needed.
    """
    from edgeagent.voice.session import AgentSession

    return AgentSession(
        vad=models.vad, stt=models.stt, llm=models.llm, tts=models.tts, wake=wake_for(models, cfg.activation),
        audio_turn=models.audio_turn, activation=cfg.activation, turn=cfg.turn, interruption=cfg.interruption,
        echo_cancellation=cfg.audio.echo_cancellation and echo_path,
        noise_suppression=cfg.audio.noise_suppression and echo_path, ignore_own_playback=echo_path,
        wake_noise_suppression=cfg.audio.wake_noise_suppression,
    )


def without_wake_word(cfg: Config, where: str | None) -> Config:
    """``cfg`` where nobody says the wake word (a room, the browser): ``activation.mode``
    wake runs as always; ptt and always stay. ``where`` names the place in the log line
    (None: no line)."""
    if cfg.activation.mode != "wake":
        return cfg
    if where is not None:
        log.info("%s: activation.mode wake runs as always (nobody says the wake word there)", where)
    return dataclasses.replace(cfg, activation=dataclasses.replace(cfg.activation, mode="always"))
