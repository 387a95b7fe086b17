"""Acoustic echo cancellation, so the agent does not hear itself.

A speaker and a microphone in one room: whatever the agent says comes back into
the mic, where it wakes the wake word, triggers barge-in and gets transcribed.
:class:`EchoCanceller` wraps WebRTC's audio processing module
(AEC3, through ``livekit.rtc.AudioProcessingModule``): it is told what the
speaker plays (the *reverse*, far-end stream) and subtracts its echo from what
the mic captures.

How the two streams meet:

- :meth:`EchoCanceller.attach` sets the render tap of a
  :class:`~edgeagent.audio.playback.BufferedOutput`. Every block the output hands
  to its sink is copied into a small queue. The tap runs on PortAudio's callback
  thread, so it does nothing else: no resampling, no FFI call.
- :meth:`EchoCanceller.process_capture` (the event loop, once per mic frame)
  resamples what was queued to the capture rate in 10 ms reverse frames, each
  stamped with the time it was handed to the sink, then interleaves the streams by
  wall-clock time: before the capture frame recorded at ``t`` go the reverse frames
  handed over before ``t`` + :data:`REVERSE_LEAD`. That is the one-to-one call
  pattern of a real-time client, whatever the bunching of the mic and speaker
  callbacks, and a constant delay for AEC3 (output latency + acoustic path + lead).
  Sound handed to the speaker reaches the mic only after the output latency, so a
  reverse frame always reaches the APM before the capture frames it echoes into.
- ``set_stream_delay_ms`` gets that delay less the unknown acoustic path (output
  latency + lead); AEC3 estimates the rest itself.

Measured on the PulseAudio loop of tests/test_echo.py (echo 80-210 ms after
hand-over): feeding reverse frames in bursts as they arrived (no interleave) lost
AEC3's alignment for 5-10 s in about half the runs; with the interleave and the
hint it converges within the first 0.5 s and holds 60-75 dB of reduction, except
right after an output underrun (the real delay jumps, AEC3 needs ~1 s; the listener
ignores the mic meanwhile, see :attr:`EchoCanceller.unsettled`).

Timing of the output: the APM works on exactly 10 ms frames, so capture audio is
cut into 10 ms frames and a leftover under 10 ms waits for the next call. The
output of one call may thus be shorter than its input (by less than 10 ms), the
rest comes with the next call; the mic's 20 ms frames come out whole. The output
frame's timestamp is the capture time of its first input sample: the input's,
unless leftover samples from the previous call come first. Inside the APM, AEC3's
4 ms blocks delay the signal itself by about 4 ms (measured: 56-64 samples at
16 kHz), which the timestamps do not account for.

Cost, 2-core x86: ~115 µs of APM, resampling and copying per 10 ms of mic audio
(~1 % of a core) on the event loop; the tap costs ~3 µs per block on the audio thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeagent.audio.frame import AudioFrame, Int16Array
from edgeagent.audio.playback import BufferedOutput
from edgeagent.audio.resample import FrameAssembler, Resampler
from edgeagent.errors import AudioFormatError, ConfigError, EdgeAgentError

#: The rates WebRTC's APM processes natively.
APM_RATES = (8_000, 16_000, 32_000, 48_000)
#: Far-end audio counts as "playing" while its peak exceeds this (int16, about -60 dBFS).
SILENCE_PEAK = 32
#: How long the room keeps echoing after the last far-end sound was played (seconds).
ECHO_TAIL = 0.5
#: At most this much rendered audio waits for the next capture frame; older blocks are
#: dropped (the mic is not being read, so their echo would never be processed anyway).
MAX_PENDING_S = 1.0
#: Far-end frames go to the APM this long before capture frames recorded at their hand-over
#: time, so a late speaker callback rarely leaves the APM without a far-end frame.
REVERSE_LEAD = 0.03
#: The delay hint the APM accepts, in ms (it refuses values outside).
MAX_DELAY_MS = 500
#: After the output ran dry, the echo comes later than before and AEC3 lets it through until
#: it has found the new delay; for this long the cancelled mic is not to be trusted while
#: the far end plays (see :attr:`EchoCanceller.unsettled`).
RESETTLE_S = 1.5


@dataclass
class EchoStats:
    """Counters for tests and metrics; read them, don't reset them."""

    capture_frames: int = 0
    """10 ms frames passed through the APM's capture (near-end) side."""
    reverse_frames: int = 0
    """10 ms frames fed to the APM as the far-end reference."""
    dropped_reverse_blocks: int = 0
    """Rendered blocks dropped by the tap because nobody processed capture audio for a while."""
    dropped_reverse_frames: int = 0
    """Reverse frames dropped because capture audio lagged them by over a second."""
    delay_ms: int | None = None
    """The render→capture delay hint given to the APM (the output's latency)."""


def load_rtc() -> Any:
    try:
        from livekit import rtc
    except ImportError as exc:
        raise EdgeAgentError(
            "echo cancellation needs the livekit package (WebRTC's audio processing): "
            "install it with pip install 'edgeagent[livekit]'"
        ) from exc
    return rtc


class EchoCanceller:
    """Removes what the attached output plays from mono int16 mic audio at ``rate``.

    ``noise_suppression`` and ``auto_gain`` switch on the APM's other stages (off
    by default: Silero and Whisper cope with noise, and AGC pumps the level of the
    residual echo). The high-pass filter is always on, as WebRTC runs AEC3.
    Not for concurrent use of :meth:`process_capture`; :meth:`attach`,
    :meth:`detach` and the render tap are thread-safe.
    """

    def __init__(
        self, rate: int = 16_000, *, noise_suppression: bool = False, auto_gain: bool = False
    ) -> None:
        if rate not in APM_RATES:
            raise ConfigError(
                f"echo cancellation works at {', '.join(map(str, APM_RATES))} Hz, not {rate!r}"
            )
        self._rtc = load_rtc()
        self.rate = rate
        self.frame_samples = rate // 100
        self.stats = EchoStats()
        self._apm: Any = self._rtc.AudioProcessingModule(
            echo_cancellation=True,
            noise_suppression=noise_suppression,
            high_pass_filter=True,
            auto_gain_control=auto_gain,
        )
        # One reusable FFI frame per side: the APM works in place on their buffers.
        self._cap_buf = bytearray(2 * self.frame_samples)
        self._rev_buf = bytearray(2 * self.frame_samples)
        self._cap_frame = self._rtc.AudioFrame(self._cap_buf, rate, 1, self.frame_samples)
        self._rev_frame = self._rtc.AudioFrame(self._rev_buf, rate, 1, self.frame_samples)
        self._cap_view = np.frombuffer(self._cap_buf, np.int16)
        self._rev_view = np.frombuffer(self._rev_buf, np.int16)
        # Far-end side: filled by the tap (sink thread), emptied by process_capture.
        self._lock = threading.Lock()
        self._pending: deque[tuple[Int16Array, int, float]] = deque()
        self._pending_s = 0.0
        self._output: BufferedOutput | None = None
        self._last_far: float | None = None  # when non-silent far-end audio was last handed over
        self._rev_resampler: Resampler | None = None
        self._rev_frames = FrameAssembler(rate, self.frame_samples)
        self._rev_ready: deque[AudioFrame] = deque()  # 10 ms frames waiting for their capture time
        self._max_ready = round(MAX_PENDING_S * 100)
        self._rev_latency = 0.0  # output latency of the output the frames come from
        # Near-end side: samples under 10 ms left from the previous call.
        self._leftover: Int16Array = np.zeros(0, np.int16)
        self._leftover_ts: float | None = None
        self._closed = False

    # -- far end ----------------------------------------------------------------

    def attach(self, output: BufferedOutput) -> None:
        """Use what ``output`` plays from now on as the far-end reference (replaces any other)."""
        with self._lock:
            previous, self._output = self._output, output
            if previous is not None and previous is not output:
                previous.on_render = None
            output.on_render = self._on_render

    def detach(self) -> None:
        """Stop listening to the output; the echo already queued is still processed."""
        with self._lock:
            output, self._output = self._output, None
            if output is not None and output.on_render == self._on_render:
                output.on_render = None

    def _on_render(self, block: Int16Array, sink_rate: int, now: float) -> None:
        # The sink's thread (PortAudio's callback): copy, note, queue. Never raise.
        try:
            samples = block.copy()
            seconds = len(samples) / sink_rate
            with self._lock:
                if self._closed:
                    return
                if len(samples) and int(np.abs(samples).max()) > SILENCE_PEAK:
                    self._last_far = now
                self._pending.append((samples, sink_rate, now))
                self._pending_s += seconds
                while self._pending_s > MAX_PENDING_S and len(self._pending) > 1:
                    old, old_rate, _ = self._pending.popleft()
                    self._pending_s -= len(old) / old_rate
                    self.stats.dropped_reverse_blocks += 1
        except Exception:  # pragma: no cover - a broken tap must not silence the speaker
            return

    @property
    def active(self) -> bool:
        """Far-end audio (not silence) is playing or was played within the echo tail.

        Counted from the time the last audible block was handed to the sink, plus the
        output's latency (when it actually sounds) and :data:`ECHO_TAIL`. Use it to be
        stricter about barge-in while the agent talks.
        """
        last = self._last_far
        if last is None:
            return False
        output = self._output
        latency = output.output_latency if output is not None else 0.0
        return time.monotonic() - last < latency + ECHO_TAIL

    @property
    def unsettled(self) -> bool:
        """The far end plays and the output ran dry within :data:`RESETTLE_S`: the echo's
        delay just jumped, and until AEC3 has found it again the agent's own voice comes
        through (tests/test_session.py: an underrun mid-reply, and the agent heard
        "That's it." in its own words and stopped)."""
        output = self._output
        last = output.last_underflow if output is not None else None
        return last is not None and time.monotonic() - last < RESETTLE_S and self.active

    def _collect_reverse(self) -> None:
        """Turn the blocks the tap queued into 10 ms reverse frames at our rate (not fed yet)."""
        with self._lock:
            blocks = list(self._pending)
            self._pending.clear()
            self._pending_s = 0.0
            output = self._output
        if output is not None:
            self._rev_latency = output.output_latency
        for samples, sink_rate, t in blocks:
            resampler = self._rev_resampler
            if resampler is None or resampler.in_rate != sink_rate:
                resampler = self._rev_resampler = Resampler(sink_rate, self.rate, quality="LQ")
                self._rev_frames.reset()
            frame = AudioFrame(_readonly(samples), sink_rate, t)
            self._rev_ready.extend(self._rev_frames.push(resampler.push(frame)))
        while len(self._rev_ready) > self._max_ready:  # the mic is not being read
            self._rev_ready.popleft()
            self.stats.dropped_reverse_frames += 1

    def _feed_reverse(self, until: float | None) -> None:
        """Feed the APM the reverse frames handed to the sink before ``until`` (all if None).

        Interleaving the two streams by wall-clock time (a far-end frame goes in just
        before the capture frame recorded at the instant it was handed to the sink)
        gives the APM the steady one-to-one call pattern of a real-time client, however
        the mic and speaker callbacks bunch up, and makes the delay it sees constant:
        the output latency plus the acoustic path. Fed in bursts as they arrive, the
        delay jittered by tens of ms and AEC3 lost its alignment for seconds at a time.
        """
        while self._rev_ready:
            rev = self._rev_ready[0]
            if until is not None and rev.timestamp is not None and rev.timestamp > until:
                break
            self._rev_ready.popleft()
            self._rev_view[:] = rev.samples
            self._apm.process_reverse_stream(self._rev_frame)
            self.stats.reverse_frames += 1

    def _set_delay(self) -> None:
        """Tell the APM the delay between its streams: (t_render - t_analyze) + (t_process - t_capture).

        With the streams interleaved by wall-clock time, a far-end frame is analysed
        as if at the instant it was handed to the sink, and a capture frame processed
        as if at the instant it was captured, so the delay is the output's latency
        (handed over → played) plus :data:`REVERSE_LEAD`; the acoustic path, unknown
        here, AEC3 finds itself. Measured on a synthetic 300 ms echo: the right hint
        converged in the first second, a hint of 100 ms took 2-3 s, none was in between.
        """
        delay = int(min(MAX_DELAY_MS, max(0, round((self._rev_latency + REVERSE_LEAD) * 1000))))
        self.stats.delay_ms = delay
        self._apm.set_stream_delay_ms(delay)  # the APM forgets it after every capture frame

    def process_capture(self, frame: AudioFrame) -> AudioFrame:
        """Echo-cancel mic audio; returns the whole 10 ms frames processed so far.

        ``frame`` must be at the canceller's rate. Samples beyond the last whole
        10 ms frame wait for the next call (see the module notes on timing).
        """
        if self._closed:
            raise EdgeAgentError("EchoCanceller is closed")
        if frame.sample_rate != self.rate:
            raise AudioFormatError(
                f"EchoCanceller works at {self.rate} Hz, got a {frame.sample_rate} Hz frame: "
                "open the input at that rate or resample first"
            )
        self._collect_reverse()
        n = self.frame_samples
        if len(self._leftover):
            samples = np.concatenate([self._leftover, frame.samples])
            ts = self._leftover_ts
        else:
            samples, ts = frame.samples, frame.timestamp
        whole = len(samples) - len(samples) % n
        out = np.empty(whole, np.int16)
        for i in range(0, whole, n):
            self._feed_reverse(ts + i / self.rate + REVERSE_LEAD if ts is not None else None)
            self._set_delay()
            self._cap_view[:] = samples[i : i + n]
            self._apm.process_stream(self._cap_frame)
            out[i : i + n] = self._cap_view
            self.stats.capture_frames += 1
        self._leftover = samples[whole:].copy()
        self._leftover_ts = ts + whole / self.rate if ts is not None else None
        return AudioFrame(_readonly(out), self.rate, ts)

    def close(self) -> None:
        """Detach and release the APM (safe to call twice)."""
        self.detach()
        with self._lock:
            self._closed = True
            self._pending.clear()
        self._apm = None


def _readonly(arr: Int16Array) -> Int16Array:
    arr.flags.writeable = False
    return arr
