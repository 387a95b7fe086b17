"""A private PulseAudio with the null sinks ``mic_feed`` and ``speaker``, as ``scripts/test`` starts it.

:func:`start_pulse` runs ``pulseaudio -n`` in the foreground with its own runtime, state
and socket under ``workdir`` (a developer's sound session is untouched), and points this
process's environment (``PULSE_SERVER`` and friends) at it, so that every child process
(``paplay``, ``parec``, an agent's sounddevice through ALSA's pulse plugin) uses it. The
default source is ``mic_feed.monitor`` (play into ``mic_feed`` = someone speaking), the
default sink ``speaker`` (record ``speaker.monitor`` = what the agent said).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from edgeagent.errors import EdgeAgentError

START_TIMEOUT_S = 10.0
MIC_SINK = "mic_feed"
SPEAKER_MONITOR = "speaker.monitor"


@dataclass
class Pulse:
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s); nothing when it has exited."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _pactl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=5, check=False)


def start_pulse(workdir: Path) -> Pulse:
    """PulseAudio under ``workdir`` (sets this process's PULSE_* and XDG_RUNTIME_DIR); EdgeAgentError
    when it is missing or does not come up with both sinks within 10 s."""
    for exe in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(exe) is None:
            raise EdgeAgentError(f"{exe} not found: run scripts/setup --dev")
    run, state = workdir / "run", workdir / "pulse-state"
    runtime = run / "pulse"
    for d in (run, runtime, state):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    client = workdir / "pulse-client.conf"
    client.write_text("autospawn = no\n")
    os.environ.update(XDG_RUNTIME_DIR=str(run), PULSE_RUNTIME_PATH=str(runtime), PULSE_STATE_PATH=str(state),
                      PULSE_SERVER=f"unix:{runtime}/native", PULSE_CLIENTCONFIG=str(client))
    script = workdir / "pulse.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={runtime}/native\n"
        f"load-module module-null-sink sink_name={MIC_SINK} norewinds=1 sink_properties=device.description={MIC_SINK}\n"
        "load-module module-null-sink sink_name=speaker norewinds=1 sink_properties=device.description=speaker\n"
        f"set-default-source {MIC_SINK}.monitor\nset-default-sink speaker\n")
    log_path = workdir / "pulseaudio.log"
    proc = subprocess.Popen(
        ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
         "--use-pid-file=no", "--high-priority=no", "--realtime=no", f"--log-target=file:{log_path}",
         "--log-level=info"], stdin=subprocess.DEVNULL)
    pulse = Pulse(proc, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            sinks = _pactl("list", "short", "sinks")
        except subprocess.TimeoutExpired:
            continue
        names = {line.split("\t")[1] for line in sinks.stdout.splitlines() if "\t" in line}
        if sinks.returncode == 0 and {MIC_SINK, "speaker"} <= names:
            return pulse
        time.sleep(0.1)
    pulse.stop()
    raise EdgeAgentError(f"PulseAudio did not come up with the null sinks within {START_TIMEOUT_S:.0f} s "
                         f"(log: {log_path})")
