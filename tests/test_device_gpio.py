"""GPIO status LED and buttons (gpiozero's MockFactory) on a real session: speech played into the
virtual mic (PulseAudio null sinks), the default models, the LED pins read after every state change.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gpiozero  # the [gpio] extra (scripts/setup installs it): missing, this module fails loudly
import pytest
from conftest import PulseDevices
from gpio_mock import mock_pins
from gpiozero.pins.mock import MockFactory
from live import Live, bounded, play, words
from speech import piper, save, with_silence

from edgeagent.audio.frame import AudioFrame
from edgeagent.config import load
from edgeagent.config.device import GpioConfig, parse_pattern
from edgeagent.device.gpio import GpioPanel, StatusLed
from edgeagent.errors import ConfigError
from edgeagent.voice import (
    AgentState,
    ConversationItemAddedEvent,
    MetricsCollectedEvent,
    Models,
    UserInputTranscribedEvent,
    WakeWordDetectedEvent,
)
from edgeagent.voice.events import ErrorEvent

RATE = 16_000
RED, GREEN, BLUE, PTT, MUTE = 17, 27, 22, 5, 6
COLOURS = {AgentState.IDLE: (0, 0, 0), AgentState.LISTENING: (0, 0, 1), AgentState.THINKING: (1, 1, 0),
           AgentState.SPEAKING: (0, 1, 0)}
MUTED, ERROR = (1, 0, 0), (1, 0, 1)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """Mock pins that can do PWM, as the default pin factory; reset afterwards."""
    with mock_pins() as mock:
        yield mock


def rgb_config(**extra: Any) -> GpioConfig:
    return GpioConfig(rgb_pins=(str(RED), str(GREEN), str(BLUE)), ptt_pin=str(PTT), mute_pin=str(MUTE),
                      idle="off", listening="on blue", thinking="on yellow", speaking="on green",
                      muted="on red", error="on magenta", **extra)


def colour(mock: MockFactory) -> tuple[int, ...]:
    return tuple(round(float(mock.pin(p).state)) for p in (RED, GREEN, BLUE))


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gpio")
    return save(with_silence(piper("What is the capital of France?"), 0.3, 1.5), d / "question.wav")


@pytest.fixture(scope="module")
def wake_question(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gpio-wake")
    frame = AudioFrame.concat([piper("Hey Jarvis."), AudioFrame.silence(0.6, RATE), piper("How many legs does a "
                                                                                          "spider have?")])
    return save(with_silence(frame, 0.5, 1.5), d / "wake_question.wav")


async def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        await asyncio.sleep(0.02)


@pytest.mark.pulse
async def test_led_follows_the_session_and_the_buttons_drive_it(
    models: Models, pulse: PulseDevices, factory: MockFactory, question: Path, wake_question: Path
) -> None:
    panel = GpioPanel.open(rgb_config(error_hold_s=0.4))
    assert panel is not None and panel.led is not None and panel.led.pwm
    live = Live(models)  # wake mode: only the wake word, or the push-to-talk button, opens a turn
    seen: list[tuple[AgentState, bool, tuple[int, ...]]] = []  # at each state change: state, muted, LED
    try:
        async with live.running():
            panel.attach(live.session)
            live.session.on("agent_state_changed",
                            lambda ev: seen.append((ev.new_state, live.session.muted, colour(factory))))
            assert colour(factory) == COLOURS[AgentState.IDLE]

            # Push-to-talk: held, a question without the wake word is heard and answered.
            factory.pin(PTT).drive_low()
            await live.wait_state(AgentState.LISTENING, 5)
            await play(pulse.mic_sink, question)
            factory.pin(PTT).drive_high()
            metrics = await live.wait_for(MetricsCollectedEvent, 60)
            assert {"capital", "france"} <= words(metrics.metrics.transcript), metrics
            assert not live.of(WakeWordDetectedEvent)
            turn_states = [s for s, _, _ in seen]
            assert turn_states[:3] == [AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING], seen

            # An error shows its pattern for error_hold_s, then the state's again.
            live.session.emit(ErrorEvent(RuntimeError("a test error"), "test"))
            assert colour(factory) == ERROR
            await wait_until(lambda: colour(factory) == COLOURS[live.session.state], "back from the error pattern")

            # Mute: the wake word and a question are not heard; the LED shows muted whatever the state.
            factory.pin(MUTE).drive_low()
            factory.pin(MUTE).drive_high()
            await wait_until(lambda: live.session.muted, "muted by the button")
            assert colour(factory) == MUTED
            await wait_until(lambda: live.session.state is AgentState.IDLE, "idle once muted")
            before = len(live.events)
            await play(pulse.mic_sink, wake_question)
            await asyncio.sleep(1.5)
            heard = [e for e in live.events[before:] if isinstance(e, (WakeWordDetectedEvent,
                                                                        UserInputTranscribedEvent))]
            assert not heard, heard
            assert live.session.state is AgentState.IDLE and colour(factory) == MUTED
            # Push-to-talk does nothing while muted.
            factory.pin(PTT).drive_low()
            await asyncio.sleep(0.2)
            factory.pin(PTT).drive_high()
            assert live.session.state is AgentState.IDLE and colour(factory) == MUTED

            # Unmuted, the wake word works again.
            factory.pin(MUTE).drive_low()
            factory.pin(MUTE).drive_high()
            await wait_until(lambda: not live.session.muted, "unmuted by the button")
            assert colour(factory) == COLOURS[AgentState.IDLE]
            at = len(live.events)
            await play(pulse.mic_sink, wake_question)
            await live.wait_for(WakeWordDetectedEvent, 10, after=at)
            await live.wait_state(AgentState.LISTENING, 5, at)
    finally:
        panel.close()
    for state, muted, rgb in seen:  # every state change showed its pattern, or muted's
        assert rgb == (MUTED if muted else COLOURS[state]), (state, muted, rgb, seen)
    assert [s for s, muted, _ in seen if not muted].count(AgentState.LISTENING) >= 2, seen  # PTT, then wake word
    users = [e.item.content for e in live.of(ConversationItemAddedEvent) if e.item.role == "user"]
    assert len(users) >= 1 and {"capital", "france"} <= words(users[0]), users


@pytest.mark.pulse
async def test_mute_drops_the_turn_being_heard(models: Models, pulse: PulseDevices, factory: MockFactory,
                                               question: Path) -> None:
    """Muted halfway through a push-to-talk question: no transcript, no reply."""
    panel = GpioPanel.open(rgb_config())
    assert panel is not None
    live = Live(models)
    try:
        async with live.running():
            panel.attach(live.session)
            factory.pin(PTT).drive_low()
            player = asyncio.ensure_future(play(pulse.mic_sink, question))
            await asyncio.sleep(1.0)
            factory.pin(MUTE).drive_low()
            factory.pin(MUTE).drive_high()
            await wait_until(lambda: live.session.muted, "muted")
            factory.pin(PTT).drive_high()
            await bounded(player, "the question")
            await asyncio.sleep(2.0)
            assert live.session.state is AgentState.IDLE
    finally:
        panel.close()
    assert not [e for e in live.of(UserInputTranscribedEvent) if e.is_final], live.events
    assert not live.of(ConversationItemAddedEvent)
    assert live.states()[-1] is AgentState.IDLE
    assert [s for s in live.states() if s in (AgentState.THINKING, AgentState.SPEAKING)] == []


def test_blink_and_pulse_drive_the_pin(factory: MockFactory) -> None:
    led = gpiozero.PWMLED(4)
    status = StatusLed(led, rgb=False, pwm=True)
    try:
        status.show(parse_pattern("blink 0.1"))
        time.sleep(0.45)
        states = [s.state for s in factory.pin(4).states]
        assert states.count(1.0) >= 3 and states.count(0.0) >= 3, states
        factory.pin(4).clear_states()
        status.show(parse_pattern("pulse 0.4"))
        time.sleep(0.5)
        levels = {round(float(s.state), 2) for s in factory.pin(4).states}
        assert len([v for v in levels if 0.0 < v < 1.0]) >= 3, levels  # a fade, not on/off
        status.show(parse_pattern("on"))
        assert factory.pin(4).state == 1.0
        status.show(parse_pattern("off"))
        assert factory.pin(4).state == 0.0
    finally:
        status.close()


def test_a_pin_without_pwm_blinks_instead_of_pulsing(caplog: pytest.LogCaptureFixture) -> None:
    old = gpiozero.Device.pin_factory
    gpiozero.Device.pin_factory = MockFactory()  # MockPin: no PWM
    try:
        with caplog.at_level(logging.INFO, logger="edgeagent.device.gpio"):
            panel = GpioPanel.open(GpioConfig(led_pin="GPIO12"))
        assert panel is not None and panel.led is not None and not panel.led.pwm
        assert any("cannot do PWM" in r.getMessage() for r in caplog.records), caplog.text
        panel.led.show(parse_pattern("pulse 0.1"))
        time.sleep(0.35)
        states = [s.state for s in gpiozero.Device.pin_factory.pin(12).states]
        assert states.count(True) >= 2 and states.count(False) >= 2, states
        panel.close()
    finally:
        gpiozero.Device.pin_factory.close()
        gpiozero.Device.pin_factory = old


def test_a_board_without_gpio_gets_one_clear_line(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no GPIO: no pin factory loads. One warning, no exception, no LED."""
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    old = gpiozero.Device.pin_factory
    gpiozero.Device.pin_factory = None
    try:
        with caplog.at_level(logging.DEBUG):
            panel = GpioPanel.open(rgb_config())
    finally:
        gpiozero.Device.pin_factory = old
    assert panel is None
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith("gpio: no usable GPIO on this board (")
    assert "the status LED and buttons are off" in lines[0].getMessage()


def test_no_gpio_section_imports_no_gpio_code(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from edgeagent.config import Config\n"
        "from edgeagent.device.lifecycle import Lifecycle\n"
        "import edgeagent.runner, edgeagent.device.gpio\n"
        "life = Lifecycle(Config(), env_notify=False)\n"
        "life.session = object()\n"
        "life._open_gpio(Config())\n"
        "assert life.gpio is None\n"
        "print('gpiozero' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("text", "expected"), [
    ("off", ("off", 1.0, (1.0, 1.0, 1.0))),
    ("pulse 2 blue", ("pulse", 2.0, (0.0, 0.0, 1.0))),
    ("red blink 0.3", ("blink", 0.3, (1.0, 0.0, 0.0))),
    ("on #ff8000", ("on", 1.0, (1.0, 128 / 255, 0.0))),
])
def test_patterns_parse(text: str, expected: tuple[str, float, tuple[float, ...]]) -> None:
    p = parse_pattern(text)
    assert (p.mode, p.period_s, p.colour) == expected


@pytest.mark.parametrize(("override", "message"), [
    ("gpio.thinking=sparkle", "gpio.thinking: unknown word 'sparkle'"),
    ("gpio.idle=blink 100", "gpio.idle: period 100.0 s: expected 0.05-60 s"),
    ("gpio.muted=on off", "gpio.muted: two modes (on, off)"),
    ("gpio.rgb_pins=1,2", "gpio.rgb_pins: expected 3 pins"),
    ("gpio.ptt_pin=5", None),
])
def test_gpio_config_is_checked(override: str, message: str | None) -> None:
    overrides = [override] + (["gpio.mute_pin=5"] if message is None else [])
    with pytest.raises(ConfigError) as err:
        load(None, env={}, overrides=overrides)
    assert str(err.value).startswith(message or "gpio: a pin is used twice"), err.value
