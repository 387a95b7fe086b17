"""Config sections ``[gpio]`` and ``[logging]``: the board's status LED and buttons, and where logs go.

Part of :class:`edgeagent.config.Config` (fields ``gpio`` and ``logging``); read by
:mod:`edgeagent.device`. With no pin set in ``[gpio]`` (the default) no GPIO code is
imported or run.

An LED pattern is a few words in any order: a mode (``off``, ``on``, ``blink``,
``pulse``), optionally a period in seconds (one whole blink or pulse cycle) and, for an
RGB LED, a colour (``red``, ``green``, ``blue``, ``yellow``, ``cyan``, ``magenta``,
``white``, ``orange``, ``purple`` or ``#rrggbb``): ``"pulse 2 blue"``, ``"blink 0.3 red"``,
``"on"``. A single LED ignores the colour; without PWM, ``pulse`` blinks instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LED_MODES = ("off", "on", "blink", "pulse")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0), "orange": (1.0, 0.5, 0.0), "purple": (0.5, 0.0, 1.0),
}
DEFAULT_PERIOD_S = 1.0
LOG_TARGETS = ("auto", "journal", "stderr")
PATTERN_NAMES = ("idle", "listening", "thinking", "speaking", "muted", "error")
"""The LED patterns, in :class:`GpioConfig`: the agent states, muted and error."""
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class LedPattern:
    """A parsed LED pattern (see the module docs)."""

    mode: str
    period_s: float = DEFAULT_PERIOD_S
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)


def parse_pattern(text: str) -> LedPattern:
    """``"pulse 2 blue"`` → ``LedPattern("pulse", 2.0, (0, 0, 1))``; raises ValueError saying why."""
    mode: str | None = None
    period = DEFAULT_PERIOD_S
    colour = (1.0, 1.0, 1.0)
    for word in text.lower().split():
        if word in LED_MODES:
            if mode is not None:
                raise ValueError(f"two modes ({mode}, {word})")
            mode = word
        elif word in COLOURS:
            colour = COLOURS[word]
        elif _HEX.fullmatch(word):
            colour = (int(word[1:3], 16) / 255, int(word[3:5], 16) / 255, int(word[5:7], 16) / 255)
        else:
            try:
                period = float(word)
            except ValueError:
                raise ValueError(f"unknown word {word!r}: expected one of {', '.join(LED_MODES)}, "
                                 f"a period in seconds or a colour ({', '.join(COLOURS)}, #rrggbb)") from None
            if not 0.05 <= period <= 60:
                raise ValueError(f"period {period} s: expected 0.05-60 s")
    if mode is None:
        raise ValueError(f"no mode: expected one of {', '.join(LED_MODES)}")
    return LedPattern(mode, period, colour)


@dataclass(frozen=True)
class GpioConfig:
    """Status LED and buttons on the board's GPIO pins (gpiozero). With no pin set, no GPIO code runs.

    Pins are BCM numbers ("17") or gpiozero pin names ("GPIO17", "BOARD11"). An LED pattern is
    a mode (off, on, blink, pulse), optionally a period in seconds (one blink or pulse cycle) and,
    for an RGB LED, a colour (red, green, blue, yellow, cyan, magenta, white, orange, purple or
    #rrggbb), e.g. "pulse 2 blue". Without PWM, pulse blinks.
    """

    led_pin: str | None = None
    """A single status LED; None = none."""
    rgb_pins: tuple[str, ...] = ()
    """An RGB status LED: its red, green and blue pins, in that order; empty = none."""
    pwm: bool = True
    """Drive the LEDs with PWM (dimming, pulse, colour mixes); falls back to on/off when the pins cannot."""
    active_high: bool = True
    """The LEDs light when their pin is high; false for a common-anode RGB LED."""
    ptt_pin: str | None = None
    """Push-to-talk button: held, the agent listens without the wake word; None = none."""
    mute_pin: str | None = None
    """Mute button: each press mutes or unmutes the microphone; None = none."""
    pull_up: bool = True
    """The buttons connect their pin to ground (internal pull-up); false: to 3.3 V (pull-down)."""
    bounce_s: float = 0.05
    """Button debounce time in seconds."""
    idle: str = "off"
    """LED pattern while idle (see the module docs for the pattern words)."""
    listening: str = "on blue"
    """LED pattern while listening."""
    thinking: str = "blink 0.5 cyan"
    """LED pattern while thinking (the reply is being prepared)."""
    speaking: str = "pulse 1 green"
    """LED pattern while speaking."""
    muted: str = "on red"
    """LED pattern while the microphone is muted (whatever the agent state)."""
    error: str = "blink 0.2 red"
    """LED pattern for error_hold_s after an error."""
    error_hold_s: float = 5.0
    """How long the error pattern shows after an error, in seconds."""

    @property
    def enabled(self) -> bool:
        """Any pin set: the GPIO code runs."""
        return bool(self.led_pin or self.rgb_pins or self.ptt_pin or self.mute_pin)

    def pattern(self, name: str) -> LedPattern:
        """The parsed pattern ``name`` (one of :data:`PATTERN_NAMES`)."""
        return parse_pattern(getattr(self, name))


@dataclass(frozen=True)
class LoggingConfig:
    """Where log lines go (the level is the top-level log_level)."""

    target: str = "auto"
    """auto: the systemd journal (with fields such as STATE, TURN_ID and latencies) when systemd
    started the agent with its output on the journal, else stderr; journal; stderr."""
    journal_socket: str = "/run/systemd/journal/socket"
    """The journal's native socket (used when systemd-python is not installed, or when this is changed)."""


def check_gpio(cfg: GpioConfig) -> str | None:
    """What is wrong with ``cfg`` (one line), or None when it is usable."""
    if cfg.rgb_pins and len(cfg.rgb_pins) != 3:
        return f"gpio.rgb_pins: expected 3 pins (red, green, blue), got {len(cfg.rgb_pins)}"
    if cfg.led_pin and cfg.rgb_pins:
        return "gpio: set led_pin or rgb_pins, not both"
    pins = [p for p in (cfg.led_pin, *cfg.rgb_pins, cfg.ptt_pin, cfg.mute_pin) if p]
    if any(not p.strip() for p in pins):
        return "gpio: a pin must not be blank"
    if len(set(pins)) != len(pins):
        return f"gpio: a pin is used twice ({', '.join(pins)})"
    if not 0 <= cfg.bounce_s <= 1:
        return f"gpio.bounce_s: expected 0-1 s, got {cfg.bounce_s}"
    if not 0 <= cfg.error_hold_s <= 3600:
        return f"gpio.error_hold_s: expected 0-3600 s, got {cfg.error_hold_s}"
    for name in PATTERN_NAMES:
        try:
            cfg.pattern(name)
        except ValueError as exc:
            return f"gpio.{name}: {exc}"
    return None


def check_logging(cfg: LoggingConfig) -> str | None:
    """What is wrong with ``cfg`` (one line), or None when it is usable."""
    if cfg.target not in LOG_TARGETS:
        return f"logging.target: expected one of {', '.join(LOG_TARGETS)}, got {cfg.target!r}"
    if not cfg.journal_socket.strip():
        return "logging.journal_socket: must not be empty"
    return None
