"""Remote config changes put into effect on the running agent: :class:`LiveApplier`.

    store = ConfigStore.open(cfg)
    applier = LiveApplier(session, models, output, store.config, room_input=room_in, conventions=convs)
    control = RoomControl(store, cfg.control, applier)      # the store calls applier(config, changes)

Hot changes take effect at once, without dropping the room or the conversation:

- ``agent.instructions``: the current agent's instructions, read by the next LLM round;
  ``agent.name``: kept as :attr:`LiveApplier.name` (nothing else reads it yet);
- ``activation.*``: :meth:`AgentSession.set_activation` (what the ears read from the next
  event on; a new mode arms as at start); ``wake_words`` loads the new word models first
  (a word not installed raises) and the running wake stream switches to them;
  ``wake_threshold`` changes the running stream's triggers too;
- ``turn.*``: :meth:`AgentSession.set_turn` (options and detector, for the turn being heard too);
- ``interruption.*``: the session's barge-in options, read at every VAD event;
- ``llm.temperature``/``max_tokens``, ``tts.speed``: the running stage's ``update_options``
  (:class:`~edgeagent.stage.Stage`; the LLM's options, a voice's ``speed_change``: Piper's
  length scale, espeak-ng's words per minute), from the next reply or clause on;
- ``audio.output_volume``: the output's ``volume``, from the next rendered block on;
- ``livekit.listen``/``identities``: :meth:`RoomInput.set_listen` and the ``lk.chat`` filter of
  the room conventions (without a room: at the next join);
- ``home_assistant.url``/``token``/``timeout_s``/``conversation_agent``: the current agent's
  Home Assistant tools are made anew (:func:`edgeagent.home_assistant.tools.use_home_assistant`).

Changes that need a reload (:data:`~edgeagent.control.keys.NEEDS_RELOAD`) are checked now
(the provider is installed, the model file exists: else the change raises and the store rolls
it back), then done at the next moment the session is quiet (no reply playing or waiting, no
user turn being heard): the new stage is loaded in a worker thread while the old one serves,
swapped in (session and :class:`Models`) once the session is quiet again, and the old one is
closed. A load that fails then keeps the old stage, logs why and emits an ``error`` event.
LiveKit credentials (api_key, api_secret, token, e2ee_key) are handed to the room link at once
and take effect at its next (re)join; the room joined now stays.

A hot change that fails raises before anything changed: everything that can fail (loading
word models, building a detector, checking values and files) is done first, and only then is
the change put into effect by assignments that cannot fail. Each change is logged on one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from edgeagent.aio import wait_for
from edgeagent.config import Config
from edgeagent.config.voice import ActivationConfig
from edgeagent.control.keys import CREDENTIALS, HOT, NEEDS_RELOAD
from edgeagent.control.patch import Change
from edgeagent.errors import ConfigError
from edgeagent.llm.base import LLM
from edgeagent.tts.base import TTS
from edgeagent.voice.compose import without_wake_word
from edgeagent.voice.detectors import make_detector
from edgeagent.voice.events import AgentState, ErrorEvent
from edgeagent.voice.stages import check_loadable, create_stage, stage_specs

if TYPE_CHECKING:
    from edgeagent.audio.io import AudioOutput
    from edgeagent.control.store import ConfigStore
    from edgeagent.room.audio import RoomInput
    from edgeagent.room.connection import RoomLink
    from edgeagent.room.conventions import RoomConventions
    from edgeagent.voice.protocol import VoiceSession
    from edgeagent.voice.stages import Models
    from edgeagent.wake.oww import OpenWakeWord

log = logging.getLogger(__name__)

STAGE_KINDS = ("vad", "stt", "llm", "tts")
"""The stages a reload swaps, in the order it swaps them."""
QUIET_POLL_S = 0.1

HOT_APPLY: tuple[tuple[tuple[str, ...], str], ...] = (
    (("agent.",), "_agent"),
    (("activation.",), "_activation"),
    (("turn.",), "_turn"),
    (("interruption.",), "_interruption"),
    (LLM.hot_options + TTS.hot_options, "_stage_options"),
    (("audio.output_volume",), "_volume"),
    (("livekit.listen", "livekit.identities"), "_listen"),
    (("cloud.",), "_cloud"),
    (("home_assistant.url", "home_assistant.token", "home_assistant.timeout_s", "home_assistant.conversation_agent"),
     "_home_assistant"),
)
"""Which :class:`LiveApplier` method puts which hot settings into effect (a key ending in "."
covers its whole table); each returns the steps, after checking what can fail. The values
are already within their declared limits (:func:`edgeagent.config.validate`)."""


def _covers(key: str, path: str) -> bool:
    return path.startswith(key) if key.endswith(".") else path == key


def unapplied(paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` that no :data:`HOT_APPLY` entry puts into effect."""
    return {p for p in paths if not any(_covers(key, p) for keys, _ in HOT_APPLY for key in keys)}


if _missing := unapplied(HOT):  # pragma: no cover - caught by the tests when a hot setting is added
    raise RuntimeError(f"edgeagent.control.live: no live apply for the hot settings {sorted(_missing)}")

Apply = Callable[[], "Awaitable[None] | None"]


def reload_key(cfg: Config, kind: str) -> tuple[Any, ...]:
    """What a stage of ``kind`` was loaded from, its settings that need a reload
    (:data:`~edgeagent.control.keys.NEEDS_RELOAD`, e.g. ``llm.model``, ``llm.gpu_layers``): a new
    key needs a new stage."""
    section = getattr(cfg, kind)
    return tuple((p, getattr(section, p.split(".", 1)[1])) for p in sorted(NEEDS_RELOAD) if p.split(".", 1)[0] == kind)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LiveApplier:
    """The store's apply hook for one running session; see the module docs.

    ``output`` is where the agent speaks (its ``volume`` follows ``audio.output_volume``);
    ``room_input``, ``conventions`` and ``link`` are the room's parts when there is a room
    (``conventions`` may be a list filled later). ``in_room``: activation mode wake runs as
    always (nobody says a wake word in a room: :func:`edgeagent.voice.compose.without_wake_word`).
    """

    def __init__(self, session: VoiceSession, models: Models, output: AudioOutput, config: Config, *,
                 room_input: RoomInput | None = None, conventions: Sequence[RoomConventions] = (),
                 link: RoomLink | None = None, in_room: bool = False) -> None:
        self.session, self.models, self.output = session, models, output
        self.room_input, self.conventions, self.link, self.in_room = room_input, conventions, link, in_room
        self.config = self._effective(config, ())
        """The config in effect (the last one applied)."""
        self.name = self.config.agent.name
        self._loaded = {kind: reload_key(self.config, kind) for kind in STAGE_KINDS}
        self._pending: set[str] = set()
        self._reloader: asyncio.Task[None] | None = None

    # -- the hook ------------------------------------------------------------------------

    async def __call__(self, config: Config, changes: list[Change]) -> None:
        paths = {c.path for c in changes}
        unknown = paths - HOT - NEEDS_RELOAD
        if unknown:  # a setting added to the allow-list that this module does not know yet
            raise ConfigError(f"no live apply for {', '.join(sorted(unknown))}")
        cfg = self._effective(config, paths)
        steps = await self._prepare_hot(cfg, paths)
        kinds, credentials = self._check_reloads(cfg, paths)
        for step in steps:  # nothing below raises for a change that passed the checks above
            result = step()
            if result is not None:
                await result
        if credentials is not None:
            credentials()
        self.config = cfg
        for c in changes:
            when = ("at the next (re)join" if c.path in CREDENTIALS
                    else "at the next idle moment" if c.needs_reload else "now")
            log.info("config: %s = %s (was %s), %s", c.path, _short(c.new), _short(c.old), when)
        if kinds:
            self._pending |= kinds
            if self._reloader is None or self._reloader.done():
                self._reloader = asyncio.ensure_future(self._reload_when_quiet())

    def _effective(self, cfg: Config, paths: set[str] | tuple[()]) -> Config:
        if not self.in_room:
            return cfg
        return without_wake_word(cfg, "config: in a room" if "activation.mode" in paths else None)

    # -- hot changes ---------------------------------------------------------------------

    async def _prepare_hot(self, cfg: Config, paths: set[str]) -> list[Apply]:
        """Check every hot change and return the steps that put them into effect."""
        steps: list[Apply] = []
        for keys, name in HOT_APPLY:
            if any(_covers(key, p) for key in keys for p in paths):
                steps += await getattr(self, name)(cfg, paths)
        return steps

    async def _agent(self, cfg: Config, paths: set[str]) -> list[Apply]:
        steps: list[Apply] = []
        if "agent.instructions" in paths:
            text = cfg.agent.instructions
            if not text.strip():
                raise ConfigError("agent.instructions: the agent needs instructions")
            session = self.session
            steps.append(lambda: session.set_instructions(text))
        if "agent.name" in paths:
            steps.append(lambda: setattr(self, "name", cfg.agent.name))
        return steps

    async def _activation(self, cfg: Config, paths: set[str]) -> list[Apply]:
        s, act = self.session, cfg.activation
        steps: list[Apply] = []
        if "activation.wake_words" in paths:
            wake = self._oww()
            words = act.wake_words or ActivationConfig().wake_words  # none: the default list, as at load
            loaded = await asyncio.to_thread(wake.load_words, words)  # a word not installed raises here
            steps.append(lambda: wake.use_words(loaded, act.wake_threshold))
        elif "activation.wake_threshold" in paths:
            wake = self._oww()
            steps.append(lambda: wake.set_threshold(act.wake_threshold))
        wake_stage = s.wake or self.models.wake
        steps.append(lambda: s.set_activation(act, wake_stage))
        return steps

    async def _turn(self, cfg: Config, paths: set[str]) -> list[Apply]:
        s = self.session
        make_detector(cfg.turn, s.llm, s.audio_turn)  # a detector the stages cannot serve raises
        return [lambda: s.set_turn(cfg.turn)]

    async def _interruption(self, cfg: Config, paths: set[str]) -> list[Apply]:
        s = self.session
        return [lambda: setattr(s, "interruption", cfg.interruption)]

    async def _stage_options(self, cfg: Config, paths: set[str]) -> list[Apply]:
        """The hot options of the running stages (their kind's ``hot_options``): each provider
        puts them into effect (``update_options``: the LLM's temperature and length, the voice's
        speed)."""
        steps: list[Apply] = []
        if paths & set(LLM.hot_options):
            steps.append(self.session.llm.update_options(cfg))
        if paths & set(TTS.hot_options):
            steps.append(self.session.tts.update_options(cfg))
        return steps

    async def _volume(self, cfg: Config, paths: set[str]) -> list[Apply]:
        out, volume = self.output, cfg.audio.output_volume
        if not hasattr(type(out), "volume"):
            raise ConfigError(f"audio.output_volume: {type(out).__name__} has no volume control")
        return [lambda: setattr(out, "volume", volume)]

    async def _cloud(self, cfg: Config, paths: set[str]) -> list[Apply]:
        from edgeagent.fallback.build import apply_cloud

        s = self.session
        return [lambda: apply_cloud(s, cfg.cloud)]

    async def _home_assistant(self, cfg: Config, paths: set[str]) -> list[Apply]:
        from edgeagent.home_assistant.tools import use_home_assistant

        agent = self.session.current_agent
        return [lambda: use_home_assistant(agent, cfg.home_assistant)]

    def _oww(self) -> OpenWakeWord:
        from edgeagent.wake.oww import OpenWakeWord

        wake = self.models.wake
        if not isinstance(wake, OpenWakeWord):
            raise ConfigError(f"the wake word stage {type(wake).__name__} cannot change its words or "
                              "threshold while it runs")
        return wake

    async def _listen(self, cfg: Config, paths: set[str]) -> list[Apply]:
        listen, identities = cfg.livekit.listen, cfg.livekit.identities

        def step() -> None:
            if self.room_input is None:
                log.info("config: livekit.listen takes effect at the next join (no room now)")
            else:
                self.room_input.set_listen(listen, identities)
            for conv in self.conventions:
                conv.listen, conv.identities = listen, identities

        return [step]

    # -- reloads -------------------------------------------------------------------------

    def _check_reloads(self, cfg: Config, paths: set[str]) -> tuple[set[str], Callable[[], None] | None]:
        """The stage kinds to reload, once each is known to be loadable, and the step that hands
        new credentials to the link (None when they did not change)."""
        kinds = {p.split(".", 1)[0] for p in paths & NEEDS_RELOAD} - {"livekit"}
        for kind in kinds:
            check_loadable(cfg, kind)
        if not paths & CREDENTIALS:
            return kinds, None
        link = self.link
        if link is None:
            return kinds, lambda: log.info("config: the new LiveKit credentials are used at the next join")
        from edgeagent.room.token import TokenSource

        tokens = TokenSource(cfg.livekit)  # credentials that cannot join raise here

        def hand_over() -> None:
            link.cfg, link.tokens = cfg.livekit, tokens
            log.info("config: the room link uses the new LiveKit credentials from its next (re)join; "
                     "the room joined now stays")

        return kinds, hand_over

    def _quiet(self) -> bool:
        s = self.session
        return s.quiet and s.state in (AgentState.LISTENING, AgentState.IDLE, AgentState.INITIALIZING)

    async def _wait_quiet(self) -> None:
        """Until no reply plays or waits and no user turn is being heard."""
        changed = asyncio.Event()

        def on_state(_: Any) -> None:
            changed.set()

        self.session.on("agent_state_changed", on_state)
        try:
            while not self._quiet():
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):  # a turn can end without a new state
                    await wait_for(changed.wait(), QUIET_POLL_S)
        finally:
            self.session.off("agent_state_changed", on_state)

    async def _reload_when_quiet(self) -> None:
        while self._pending:
            await self._wait_quiet()
            kind = next(k for k in STAGE_KINDS if k in self._pending)
            self._pending.discard(kind)
            cfg = self.config
            key = reload_key(cfg, kind)
            if key == self._loaded[kind]:
                log.info("config: %s is already %s: nothing to reload", kind, _short(key))
                continue
            await self._reload(kind, cfg, key)

    async def _reload(self, kind: str, cfg: Config, key: tuple[Any, ...]) -> None:
        provider, options = next((p, o) for k, p, o in stage_specs(cfg) if k == kind)
        old = getattr(self.session, kind)
        try:
            log.info("config: loading the new %s (%s) while the old one serves", kind, _short(key))
            stage = await asyncio.to_thread(create_stage, kind, provider, options)
        except Exception as exc:
            log.error("config: the new %s (%s) could not be loaded, the old one stays: %s", kind, _short(key), exc)
            self.session.emit(ErrorEvent(exc, f"reload {kind}"))
            return
        try:
            if isinstance(stage, LLM):  # the system prompt into the new LLM's cache, as at load
                await stage.prefill(self.session.llm_context(), self.session.current_agent.tools)
            await self._wait_quiet()  # a turn may have begun while it loaded
            if reload_key(self.config, kind) != key:  # changed again meanwhile: the next round loads that
                log.info("config: the %s changed again while it loaded: dropped", kind)
                raise _Superseded
            from edgeagent.fallback.build import swap_local

            use, retire, undo = swap_local(old, stage)  # a chain keeps its cloud members
            try:
                self.session.use_stage(use)
            except BaseException:
                undo()  # the new stage is closed below, the chain keeps its old member
                raise
            stage, old = use, retire
        except BaseException as exc:
            await stage.aclose()
            if isinstance(exc, _Superseded):
                return
            if isinstance(exc, Exception):
                log.error("config: the new %s (%s) could not be used, the old one stays: %s", kind, _short(key), exc)
                self.session.emit(ErrorEvent(exc, f"reload {kind}"))
                return
            raise
        setattr(self.models, kind, stage)
        self._loaded[kind] = key
        log.info("config: the %s is now %s (reloaded at an idle moment)", kind, _short(key))
        await old.aclose()

    async def wait_reloaded(self) -> None:
        """Until every reload asked for so far is done (or failed)."""
        while self._reloader is not None and not self._reloader.done():
            await asyncio.shield(self._reloader)

    async def aclose(self) -> None:
        """Drop the reloads not done yet."""
        self._pending.clear()
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reloader


class _Superseded(Exception):
    pass


def open_store(cfg: Config) -> ConfigStore | None:
    """The remote config store over the file config ``cfg``; None (one warning) when the state
    directory cannot be used: the device then runs on the file config alone."""
    from edgeagent.control.store import ConfigStore

    try:
        return ConfigStore.open(cfg)
    except OSError as exc:
        log.warning("remote config: the state directory cannot be used (%s): running on the config file "
                    "alone, without remote changes", exc)
        return None
