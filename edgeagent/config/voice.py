"""Config sections of the voice agent: who it is, when it listens, how turns end, its stages.

They are part of :class:`edgeagent.config.Config` (``[agent]``, ``[activation]``,
``[turn]``, ``[interruption]``, ``[vad]``, ``[stt]``, ``[llm]``, ``[tts]``) and are
what :class:`edgeagent.voice.session.AgentSession` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeagent.config.settings import HOT, RELOAD, setting

ACTIVATION_MODES = ("wake", "ptt", "always")
TURN_DETECTORS = ("vad", "stt", "semantic", "audio", "combined")


@dataclass(frozen=True)
class AgentConfig:
    """The agent's identity and instructions."""

    name: str = setting("edgeagent", min_len=1, max_len=64, remote=HOT)
    """Shown to other participants and in logs."""
    instructions: str = setting(
        (
            "You are a helpful voice assistant on a small device. Answer in one or two short sentences."
        ),
        max_len=8000, remote=HOT,
    )
    """The system prompt of the default agent."""


@dataclass(frozen=True)
class ActivationConfig:
    """When the agent listens."""

    mode: str = setting("wake", choices=ACTIVATION_MODES, remote=HOT)
    """wake: after a wake word; ptt: while the push-to-talk button is held; always: all the time (rooms)."""
    wake_words: tuple[str, ...] = setting(
        ("hey_jarvis",), min_len=1, max_len=256, max_items=8, unique=True, remote=HOT)
    """Wake word models (openwakeword: hey_jarvis, alexa, hey_mycroft, hey_rhasspy)."""
    wake_threshold: float = setting(0.1, lo=0.0, hi=1.0, lo_open=True, hi_open=True, remote=HOT)
    """Wake word score (0-1) at which the word fires; higher: fewer false triggers. Low, as
    verify_wake drops a wake-up whose words are not the phrase (tuned with
    scripts/bench-accuracy; without verify_wake use openWakeWord's own 0.5)."""
    verify_wake: bool = setting(True, remote=HOT)
    """A wake word whose score stays under the trusted level counts only when the transcript of
    the speech it fired in begins with its phrase ("hey_jarvis": "Hey Jarvis", "Hi, Jervis"…
    matched by sound); otherwise it is dropped without a word. Either way the phrase is taken
    off the question's transcript."""
    listen_s: float = setting(8.0, lo=0.0, hi=120.0, remote=HOT)
    """After the wake word: how long to wait for the question to start."""
    follow_up_s: float = setting(5.0, lo=0.0, hi=120.0, remote=HOT)
    """After a reply: how long a follow-up question may start without the wake word (0: none)."""
    stop_words: tuple[str, ...] = setting(
        ("stop", "stop it", "be quiet", "quiet", "never mind", "cancel", "shut up"),
        min_len=1, max_len=64, max_items=32, remote=HOT)
    """Said alone, these stop the agent (and are not sent to the LLM); the wake word said
    while the agent speaks stops it too."""


@dataclass(frozen=True)
class TurnConfig:
    """How the end of the user's turn is decided."""

    detection: str = setting("combined", choices=TURN_DETECTORS, remote=HOT)
    """How long the silence after speech must last before the turn ends (adaptive
    endpointing between min_delay_s and max_delay_s). combined: the words (the local LLM's
    end-of-turn probability, the STT's trailing punctuation not trusted), and where they
    leave room for doubt the voice too (Smart Turn, an audio end-of-turn model): the
    shortest wait when both find the turn over, longer as either doubts; semantic: the
    words alone; audio: the voice alone; vad: always min_delay_s; stt: as soon as the
    transcript is final."""
    min_delay_s: float = setting(0.3, lo=0.0, hi=10.0, remote=HOT)
    """Silence after speech (s) before a turn that looks finished ends."""
    max_delay_s: float = setting(2.0, lo=0.0, hi=30.0, remote=HOT)
    """Silence after speech (s) after which the turn ends whatever it looks like."""
    eot_threshold: float = setting(0.05, lo=0.0, hi=1.0, lo_open=True, hi_open=True, remote=HOT)
    """semantic, combined: the words' end-of-turn probability at or above which they count
    as finished (below it the wait grows, to max_delay_s at a hundredth of it)."""
    max_speech_s: float = setting(15.0, lo=0.0, hi=300.0, lo_open=True, remote=HOT)
    """A turn is cut off (and answered) after this much speech."""
    preemptive_generation: bool = setting(True, remote=HOT)
    """Start the reply (LLM and TTS) as soon as the transcript of a pause is final, while
    the turn decision is pending; it is heard only once the turn ends, and dropped without
    a trace when the user carries on."""


@dataclass(frozen=True)
class InterruptionConfig:
    """Barge-in: the user talking over the agent."""

    enabled: bool = setting(True, remote=HOT)
    """Speech over the agent's reply stops it (needs echo cancellation to be useful)."""
    min_duration_s: float = setting(0.1, lo=0.0, hi=10.0, remote=HOT)
    """Speech must last this long (s) to pause the reply; shorter sounds over it are ignored."""
    false_timeout_s: float = setting(2.0, lo=0.0, hi=60.0, lo_open=True, remote=HOT)
    """A paused reply resumes when no words were heard within this time (s)."""


@dataclass(frozen=True)
class VADConfig:
    """Voice activity detection."""

    provider: str = setting("silero", providers="vad", remote=RELOAD)
    """silero."""
    activation_threshold: float = 0.5
    """Speech probability at or above which audio counts as speech."""


@dataclass(frozen=True)
class STTConfig:
    """Speech to text."""

    provider: str = setting("whisper", providers="stt", remote=RELOAD)
    """whisper, vosk, or another provider registered in edgeagent/registry.py."""
    model: str | None = None
    """Model directory; None = the provider's default model from the models directory."""
    partials: bool = True
    """Interim transcripts while the user speaks."""


@dataclass(frozen=True)
class LLMConfig:
    """The language model."""

    provider: str = setting("llama", providers="llm", remote=RELOAD)
    """llama (llama.cpp, local), or another provider registered in edgeagent/registry.py."""
    model: str | None = setting(None, min_len=1, max_len=4096, remote=RELOAD)
    """A .gguf file; None = the default model from the models directory."""
    temperature: float = setting(0.2, lo=0.0, hi=2.0, remote=HOT)
    """Sampling temperature; 0 is deterministic."""
    max_tokens: int = setting(120, lo=1, hi=4096, remote=HOT)
    """Longest reply in tokens."""
    gpu_layers: int = setting(0, lo=-1, hi=1000, remote=RELOAD)
    """llama: layers offloaded to the GPU (llama.cpp n_gpu_layers; -1 = all). Needs a CUDA build
    (scripts/setup makes one where nvcc is, e.g. a Jetson); 0 = CPU only."""


@dataclass(frozen=True)
class TTSConfig:
    """Text to speech."""

    provider: str = setting("piper", providers="tts", remote=RELOAD)
    """piper, espeak, or another voice registered in edgeagent/registry.py."""
    model: str | None = setting(None, min_len=1, max_len=4096, remote=RELOAD)
    """The voice's model, as the provider reads it (piper: a voice file (.onnx); espeak: a voice
    name, e.g. en-us); None = its default voice."""
    speed: float = setting(1.0, lo=0.25, hi=4.0, remote=HOT)
    """Speaking rate; 1.0 is the voice's own."""
