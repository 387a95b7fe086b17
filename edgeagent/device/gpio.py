"""The board's status LED and buttons, with gpiozero: :class:`GpioPanel`.

    panel = GpioPanel.open(cfg.gpio)        # None (one log line) when the board has no usable GPIO
    panel.attach(session)                   # the LED follows the agent; the buttons drive it
    ...
    panel.close()

The LED (a single LED on ``led_pin``, or an RGB LED on ``rgb_pins``) shows the pattern of
the agent state (``idle``, ``listening``, ``thinking``, ``speaking``); ``muted`` while the
microphone is muted, whatever the state; ``error`` for ``error_hold_s`` after an error event.
The push-to-talk button (``ptt_pin``), held, opens the user's turn without the wake word
(:meth:`AgentSession.push_to_talk`); the mute button (``mute_pin``) mutes and unmutes
the microphone (:meth:`AgentSession.mute`).

gpiozero calls button handlers from its own thread; they are handed to the event loop.
gpiozero is imported only here, and only when ``[gpio]`` sets a pin. Which pins exist is
gpiozero's business: its pin factory (lgpio on a Raspberry Pi 5, RPi.GPIO or lgpio on
older Pis, ``GPIOZERO_PIN_FACTORY=mock`` for a try without hardware). A board where no pin
factory works gets one warning line saying so, and the agent runs without LED and buttons.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from edgeagent.config.device import GpioConfig, LedPattern
from edgeagent.voice.events import AgentState

log = logging.getLogger(__name__)


def pin_spec(pin: str) -> int | str:
    """gpiozero's pin spec: ``"17"`` → 17 (BCM), ``"GPIO17"``/``"BOARD11"`` as they are."""
    pin = pin.strip()
    return int(pin) if pin.isdigit() else pin


def _rounded(colour: tuple[float, float, float]) -> tuple[float, float, float]:
    r, g, b = (1.0 if c >= 0.5 else 0.0 for c in colour)
    return (r, g, b)


class StatusLed:
    """One gpiozero LED, PWMLED or RGBLED showing :class:`LedPattern` s."""

    def __init__(self, device: Any, *, rgb: bool, pwm: bool) -> None:
        self.device, self.rgb, self.pwm = device, rgb, pwm
        self.pattern: LedPattern | None = None

    def show(self, pattern: LedPattern) -> None:
        if pattern == self.pattern:
            return  # a running blink or pulse keeps its phase
        self.pattern = pattern
        led, half = self.device, pattern.period_s / 2
        colour = pattern.colour if self.pwm else _rounded(pattern.colour)
        mode = "blink" if pattern.mode == "pulse" and not self.pwm else pattern.mode
        if mode == "off":
            led.off()
        elif mode == "on":
            if self.rgb:
                led.color = colour
            else:
                led.on()
        elif mode == "blink":
            if self.rgb:
                led.blink(on_time=half, off_time=half, on_color=colour)
            else:
                led.blink(on_time=half, off_time=half)
        elif self.rgb:
            led.pulse(fade_in_time=half, fade_out_time=half, on_color=colour)
        else:
            led.pulse(fade_in_time=half, fade_out_time=half)

    def close(self) -> None:
        self.device.close()


class GpioPanel:
    """The status LED and the buttons of one running agent; see the module docs."""

    def __init__(self, cfg: GpioConfig, led: StatusLed | None, ptt: Any = None, mute: Any = None) -> None:
        self.cfg = cfg
        self.led = led
        self.ptt = ptt
        self.mute_button = mute
        self.patterns = {name: cfg.pattern(name) for name in
                         ("idle", "listening", "thinking", "speaking", "muted", "error")}
        self.on_change: Callable[[], None] | None = None
        """Called (in the loop) after a button muted or unmuted the microphone."""
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error_until = 0.0
        self._error_timer: asyncio.TimerHandle | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, cfg: GpioConfig) -> GpioPanel | None:
        """The devices of ``cfg`` opened; None, with one warning line, when GPIO cannot be used here."""
        if not cfg.enabled:
            return None
        try:
            import gpiozero
            from gpiozero.exc import PinPWMError
        except ImportError:
            log.warning("gpio: gpiozero is not installed (pip install 'edgeagent[gpio]'): "
                        "the status LED and buttons are off")
            return None
        opened: list[Any] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                led = _open_led(gpiozero, PinPWMError, cfg, opened)
                ptt = mute = None
                if cfg.ptt_pin:
                    ptt = _button(gpiozero, cfg, cfg.ptt_pin, opened)
                if cfg.mute_pin:
                    mute = _button(gpiozero, cfg, cfg.mute_pin, opened)
            except Exception as exc:  # no pin factory, pin in use, no such pin...
                for device in opened:
                    device.close()
                why = "; ".join([str(exc) or type(exc).__name__, *(str(w.message) for w in caught)])
                log.warning("gpio: no usable GPIO on this board (%s): the status LED and buttons are off", why)
                return None
        factory = type(gpiozero.Device.pin_factory).__name__
        parts = [f"LED on {cfg.led_pin or ','.join(cfg.rgb_pins)}" if led else "no LED"]
        parts += [f"push-to-talk on {cfg.ptt_pin}"] if ptt else []
        parts += [f"mute on {cfg.mute_pin}"] if mute else []
        log.info("gpio: %s (pin factory %s)", ", ".join(parts), factory)
        return cls(cfg, led, ptt, mute)

    # -- the session -----------------------------------------------------------------

    def attach(self, session: Any) -> None:
        """Follow ``session`` (an :class:`~edgeagent.voice.session.AgentSession`, started) and drive it."""
        self._session = session
        self._loop = asyncio.get_running_loop()
        session.on("agent_state_changed", self._on_state)
        session.on("error", self._on_error)
        loop = self._loop
        if self.ptt is not None:
            self.ptt.when_pressed = lambda: loop.call_soon_threadsafe(self._push, True)
            self.ptt.when_released = lambda: loop.call_soon_threadsafe(self._push, False)
        if self.mute_button is not None:
            self.mute_button.when_pressed = lambda: loop.call_soon_threadsafe(self._toggle_mute)
        self.refresh()

    def detach(self) -> None:
        if self._session is not None:
            self._session.off("agent_state_changed", self._on_state)
            self._session.off("error", self._on_error)
        self._session = None  # the button handlers do nothing from now on

    def current(self) -> str:
        """The name of the pattern to show now."""
        s = self._session
        if s is not None and s.muted:
            return "muted"
        if time.monotonic() < self._error_until:
            return "error"
        state = s.state if s is not None else AgentState.IDLE
        return state.value if state.value in self.patterns else "idle"

    def refresh(self) -> None:
        if self.led is not None:
            self.led.show(self.patterns[self.current()])

    def _on_state(self, _: Any) -> None:
        self.refresh()

    def _on_error(self, ev: Any) -> None:
        hold = self.cfg.error_hold_s
        if hold <= 0 or self._loop is None:
            return
        self._error_until = time.monotonic() + hold
        if self._error_timer is not None:
            self._error_timer.cancel()
        self._error_timer = self._loop.call_later(hold, self.refresh)
        self.refresh()

    def _push(self, pressed: bool) -> None:
        if self._session is not None:
            log.info("gpio: push-to-talk %s", "pressed" if pressed else "released")
            self._session.push_to_talk(pressed)
            self.refresh()

    def _toggle_mute(self) -> None:
        if self._session is None:
            return
        muted = not self._session.muted
        log.info("gpio: microphone %s", "muted" if muted else "unmuted")
        self._session.mute(muted)
        self.refresh()
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        self.detach()
        if self._error_timer is not None:
            self._error_timer.cancel()
        for device in (self.led, self.ptt, self.mute_button):
            if device is not None:
                device.close()


def _open_led(gpiozero: Any, pwm_error: type[Exception], cfg: GpioConfig, opened: list[Any]) -> StatusLed | None:
    if not (cfg.led_pin or cfg.rgb_pins):
        return None
    rgb = bool(cfg.rgb_pins)

    def make(pwm: bool) -> Any:
        if rgb:
            pins = [pin_spec(p) for p in cfg.rgb_pins]
            return gpiozero.RGBLED(*pins, active_high=cfg.active_high, pwm=pwm)
        assert cfg.led_pin is not None
        kind = gpiozero.PWMLED if pwm else gpiozero.LED
        return kind(pin_spec(cfg.led_pin), active_high=cfg.active_high)

    pwm = cfg.pwm
    try:
        device = make(pwm)
    except pwm_error as exc:
        if not pwm:
            raise
        log.info("gpio: the LED pins cannot do PWM (%s): on/off only, pulse blinks", exc or type(exc).__name__)
        pwm = False
        device = make(pwm)
    opened.append(device)
    return StatusLed(device, rgb=rgb, pwm=pwm)


def _button(gpiozero: Any, cfg: GpioConfig, pin: str, opened: list[Any]) -> Any:
    button = gpiozero.Button(pin_spec(pin), pull_up=cfg.pull_up, bounce_time=cfg.bounce_s or None)
    opened.append(button)
    return button
