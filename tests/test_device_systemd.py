"""sd_notify, the watchdog, the journal and the signals, for real: Unix datagram sockets of the test's
own stand in for systemd's (``NOTIFY_SOCKET``, ``/run/systemd/journal/socket``), and ``edgeagent run``
runs as a subprocess on the PulseAudio null sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import LiveKitServer, PulseDevices
from live import play, words
from speech import piper, save, with_silence

from edgeagent.config import Config, load
from edgeagent.config.device import LoggingConfig
from edgeagent.device.journal import JournalHandler, journal_wanted, setup_logging
from edgeagent.device.lifecycle import STOP_DEADLINE_S
from edgeagent.device.notify import Notifier
from edgeagent.device.watchdog import Watchdog, watchdog_interval
from edgeagent.local_job import SAMPLE_QUESTION

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edgeagent.service"


# -- sockets that stand in for systemd's ------------------------------------------------


def parse_entry(data: bytes) -> dict[str, str]:
    """A journal-native datagram (systemd.journal-native(7)) as a dict."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (n,) = struct.unpack("<Q", data[nl + 1: nl + 9])
            value = data[nl + 9: nl + 9 + n]
            assert data[nl + 9 + n: nl + 10 + n] == b"\n", "a binary field must end with a newline"
            i = nl + 10 + n
        fields[key.decode()] = value.decode()
    return fields


@dataclass
class Listener:
    """A bound AF_UNIX datagram socket; a thread keeps (arrival time, payload) of what it receives."""

    address: str | bytes
    sock: socket.socket = field(init=False)
    got: list[tuple[float, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(struct.calcsize("i")))
            except TimeoutError:
                continue
            except OSError:
                return
            for level, kind, payload in anc:  # an entry too big for a datagram: a memfd
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    (fd,) = struct.unpack("i", payload[: struct.calcsize("i")])
                    with os.fdopen(fd, "rb") as f:
                        data = f.read() if f.seek(0) == 0 else b""  # journald maps it: the offset is the sender's
            self.got.append((time.monotonic(), data))

    def texts(self) -> list[str]:
        return [d.decode() for _, d in self.got]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket path has at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ea-", dir="/tmp"))
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def wait_for(check: object, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.01)


# -- sd_notify ---------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_over_the_datagram_protocol(short_dir: Path, abstract: bool) -> None:
    name = f"@edgeagent-test-{uuid.uuid4().hex}" if abstract else str(short_dir / "notify")
    sock = Listener(b"\0" + name[1:].encode() if abstract else name)
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": name}, backend="socket")
        assert notifier is not None and notifier.backend == "socket"
        assert notifier.ready("idle") and notifier.status("listening, muted") and notifier.watchdog()
        assert notifier.stopping()
        wait_for(lambda: len(sock.got) == 4, "4 messages")
        assert sock.texts() == ["READY=1\nSTATUS=idle", "STATUS=listening, muted", "WATCHDOG=1",
                                "STOPPING=1\nSTATUS=stopping"]
        notifier.close()
    finally:
        sock.close()


def test_notify_with_systemd_python(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd-python (the [dev] extra installs it) sends through libsystemd's sd_notify."""
    name = f"@edgeagent-test-{uuid.uuid4().hex}"
    sock = Listener(b"\0" + name[1:].encode())
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    try:
        notifier = Notifier.from_env(backend="systemd")
        assert notifier is not None and notifier.backend == "systemd"
        assert notifier.ready("idle")
        wait_for(lambda: sock.got, "READY=1")
        assert sock.texts() == ["READY=1\nSTATUS=idle"]
    finally:
        sock.close()


def test_no_notify_socket_no_notifier(short_dir: Path) -> None:
    assert Notifier.from_env({}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}) is None  # a warning, no crash
    gone = Notifier(str(short_dir / "nobody-listens"), backend="socket")
    assert not gone.ready("idle") and not gone.watchdog()  # logged once, never raised


def test_watchdog_interval_follows_systemd() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None  # for another process
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


async def test_a_blocked_event_loop_stops_the_watchdog_pings(short_dir: Path) -> None:
    sock = Listener(str(short_dir / "notify"))
    dog = Watchdog(Notifier(str(short_dir / "notify"), backend="socket"), timeout=0.2)  # a ping every 0.1 s
    try:
        dog.start()
        await asyncio.sleep(0.6)
        blocked_from = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the loop is blocked: a hang, or CPU work that should be in a thread
        blocked_to = time.monotonic()
        await asyncio.sleep(0.6)
    finally:
        await dog.aclose()
        sock.close()
    pings = [t for t, d in sock.got if d == b"WATCHDOG=1"]
    before = [t for t in pings if t < blocked_from]
    during = [t for t in pings if blocked_from + 0.05 < t < blocked_to - 0.01]
    after = [t for t in pings if t >= blocked_to]
    assert len(before) >= 4 and len(after) >= 4, pings
    assert during == [], f"{len(during)} pings while the loop was blocked"
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert all(0.05 < g < 0.2 for g in gaps), gaps  # every timeout / 2 while the loop runs


# -- the journal -------------------------------------------------------------------------


def test_journal_native_protocol_with_fields(short_dir: Path) -> None:
    sock = Listener(str(short_dir / "journal"))
    handler = JournalHandler(str(short_dir / "journal"), use_systemd_python=False)
    log = logging.getLogger("edgeagent.test.journal")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        log.info("state: %s", "speaking", extra={"STATE": "speaking", "TURN_ID": "ab12", "E2E_LATENCY_MS": 640,
                                                 "lowercase": "not a field"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("a failure")
        log.warning("big %s", "x" * 300_000)  # more than one datagram takes: sent in a memfd
        wait_for(lambda: len(sock.got) == 3, "3 entries")
    finally:
        log.removeHandler(handler)
        handler.close()
        sock.close()
    first, second, big = (parse_entry(d) for _, d in sock.got)
    assert first["MESSAGE"] == "state: speaking"
    assert (first["STATE"], first["TURN_ID"], first["E2E_LATENCY_MS"]) == ("speaking", "ab12", "640")
    assert first["PRIORITY"] == "6" and first["SYSLOG_IDENTIFIER"] == "edgeagent"
    assert first["LOGGER"] == "edgeagent.test.journal"
    assert first["CODE_FUNC"] == "test_journal_native_protocol_with_fields"
    assert "lowercase" not in first and "LOWERCASE" not in first
    assert second["PRIORITY"] == "3" and "Traceback" in second["MESSAGE"]  # a newline: the binary form
    assert "RuntimeError: boom" in second["MESSAGE"]
    assert big["PRIORITY"] == "4" and big["MESSAGE"] == "big " + "x" * 300_000


def test_journal_unreachable_falls_back_to_stderr(short_dir: Path) -> None:
    import io

    out = io.StringIO()
    handler = JournalHandler(str(short_dir / "no-journal"), use_systemd_python=False, fallback=out)
    record = logging.LogRecord("edgeagent.x", logging.WARNING, __file__, 1, "still %s", ("logged",), None)
    handler.emit(record)
    handler.emit(record)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"edgeagent: cannot log to the journal at {short_dir / 'no-journal'}")
    assert [ln.endswith("WARNING edgeagent.x: still logged") for ln in lines[1:]] == [True, True]


def test_journal_when_systemd_says_so(short_dir: Path) -> None:
    with open(short_dir / "stream", "w") as f:
        st = os.fstat(f.fileno())
        stream = f"{st.st_dev}:{st.st_ino}"
        auto = LoggingConfig(journal_socket=str(short_dir / "journal"))
        assert journal_wanted(auto, {"JOURNAL_STREAM": stream}, f.fileno())
        assert not journal_wanted(auto, {"JOURNAL_STREAM": "1:2"}, f.fileno())  # stderr is not the journal
        assert not journal_wanted(auto, {}, f.fileno())
        assert not journal_wanted(auto, {"INVOCATION_ID": "x"}, f.fileno())  # no journal socket
        (short_dir / "journal").touch()
        assert journal_wanted(auto, {"INVOCATION_ID": "x"}, f.fileno())
        assert not journal_wanted(LoggingConfig(target="stderr"), {"JOURNAL_STREAM": stream}, f.fileno())
        assert journal_wanted(LoggingConfig(target="journal"), {}, f.fileno())


def test_setup_logging_switches_the_root_logger(short_dir: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    sock = Listener(str(short_dir / "journal"))
    try:
        cfg = Config(logging=LoggingConfig(target="journal", journal_socket=str(short_dir / "journal")),
                     log_level="debug")
        handler = setup_logging(cfg, env={})
        assert handler is not None and root.handlers == [handler] and root.level == logging.DEBUG
        logging.getLogger("edgeagent.x").debug("hello")
        wait_for(lambda: sock.got, "the entry")
        assert parse_entry(sock.got[0][1])["MESSAGE"] == "hello"
        assert setup_logging(Config(log_level="warning"), env={}) is handler and root.level == logging.WARNING
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            if h not in saved[0]:
                h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        sock.close()


# -- edgeagent run under a stand-in systemd ----------------------------------------------


def unit_setting(name: str) -> str:
    m = re.search(rf"^{name}=(.+)$", UNIT.read_text(), re.M)
    assert m, f"{UNIT} has no {name}="
    return m.group(1).strip()


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1)


class Process:
    """``edgeagent run`` as a subprocess; its stdout lines kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            self.lines.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.lines)


async def until(check: object, what: str, timeout: float, proc: Process) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.proc.returncode is not None:
            raise AssertionError(f"edgeagent run exited ({proc.proc.returncode}) before {what}:\n{proc.out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s:\n{proc.out}")
        await asyncio.sleep(0.05)


def index_of(sock: Listener, text: str, start: int = 0) -> int | None:
    texts = sock.texts()
    return next((i for i in range(start, len(texts)) if text in texts[i].split("\n")), None)


def pulse_clients(kind: str, pid: int) -> int:
    """How many PulseAudio streams (source-outputs or sink-inputs) process ``pid`` has open."""
    import subprocess

    out = subprocess.run(["pactl", "list", kind], capture_output=True, text=True, timeout=10).stdout
    return out.count(f'application.process.id = "{pid}"')


def write_config(path: Path, mode: str, journal: Path) -> None:
    path.write_text(f'log_level = "info"\n\n[activation]\nmode = "{mode}"\n\n[gpio]\nled_pin = "17"\n\n'
                    f'[logging]\ntarget = "journal"\njournal_socket = "{journal}"\n')


@pytest.mark.pulse
async def test_run_as_a_service(pulse: PulseDevices, short_dir: Path, tmp_path: Path) -> None:
    """In order: STATUS=loading models, READY=1 once models are loaded and the devices are open,
    WATCHDOG=1 every WatchdogSec/2, STATUS= per state, journal entries with STATE/TURN_ID/latency
    fields; SIGHUP applies the edited config file (wake → always: a question without the wake
    word is answered); SIGTERM during the reply: STOPPING=1 and exit 0 within TimeoutStopSec."""
    stop_timeout = seconds(unit_setting("TimeoutStopSec"))
    assert stop_timeout > STOP_DEADLINE_S
    question = save(with_silence(piper("How many legs does a spider have?"), 0.3, 1.5), tmp_path / "q.wav")
    notify_name = f"@edgeagent-test-{uuid.uuid4().hex}"
    notify = Listener(b"\0" + notify_name[1:].encode())
    journal = Listener(str(short_dir / "journal"))
    config = tmp_path / "config.toml"
    write_config(config, "wake", short_dir / "journal")
    watchdog_s = 2.0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEAGENT__", "GPIOZERO_"))}
    env.update(NOTIFY_SOCKET=notify_name, WATCHDOG_USEC=str(int(watchdog_s * 1e6)), EDGEAGENT_STATE=str(tmp_path),
               INVOCATION_ID=uuid.uuid4().hex)
    proc = Process(await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeagent", "run", "--config", str(config), "--input-device", "pulse",
        "--output-device", "pulse", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env))
    pid = proc.proc.pid
    try:
        await until(lambda: index_of(notify, "READY=1") is not None, "READY=1", 180, proc)
        ready_at = notify.got[index_of(notify, "READY=1") or 0][0]
        assert pulse_clients("source-outputs", pid) >= 1 and pulse_clients("sink-inputs", pid) >= 1, \
            "READY=1 came before the sound devices were open"
        texts = notify.texts()
        assert texts[0] == "STATUS=loading models", texts
        first_ready = index_of(notify, "READY=1") or 0
        assert "WATCHDOG=1" not in texts[:first_ready], texts

        # A turn in wake mode: the wake word, then the question.
        await play(pulse.mic_sink, SAMPLE_QUESTION)
        await until(lambda: any(ln.startswith("metrics: ") for ln in proc.lines), "a turn's metrics", 90, proc)
        await until(lambda: any("TURN_ID" in parse_entry(d) for _, d in journal.got), "the metrics entry", 10,
                    proc)

        # SIGHUP: the edited file says always; a question without the wake word gets an answer.
        write_config(config, "always", short_dir / "journal")
        mark = len(notify.got)
        proc.proc.send_signal(signal.SIGHUP)
        await until(lambda: (i := index_of(notify, "RELOADING=1", mark)) is not None
                    and index_of(notify, "READY=1", i) is not None, "RELOADING=1 then READY=1", 20, proc)
        mark = len(notify.got)
        await play(pulse.mic_sink, question)
        await until(lambda: index_of(notify, "STATUS=speaking", mark) is not None, "STATUS=speaking", 90, proc)

        # SIGTERM during the reply.
        term_at = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.proc.wait(), stop_timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"still running {stop_timeout} s after SIGTERM:\n{proc.out}") from None
        await asyncio.wait_for(proc.reader, 5)
        assert code == 0, proc.out + "\n" + "\n".join(parse_entry(d)["MESSAGE"] for _, d in journal.got[-30:])
        stopped_in = time.monotonic() - term_at
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
            await asyncio.wait_for(proc.proc.wait(), 10)
        await asyncio.sleep(0.2)  # the last datagrams
        notify.close()
        journal.close()

    # What it told the service manager.
    texts = notify.texts()
    stopping = index_of(notify, "STOPPING=1")
    assert stopping is not None and notify.got[stopping][0] >= term_at, texts
    statuses = [t.split("STATUS=", 1)[1] for t in texts if "STATUS=" in t]
    for state in ("idle", "listening", "thinking", "speaking"):
        assert state in statuses, statuses
    pings = [t for t, d in notify.got if d == b"WATCHDOG=1" and ready_at <= t <= term_at]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 0.6 * (term_at - ready_at) / (watchdog_s / 2), (len(pings), term_at - ready_at)
    assert max(gaps) < watchdog_s, f"a gap of {max(gaps):.2f} s between pings: systemd would have killed it"
    assert sorted(gaps)[len(gaps) // 2] > 0.5 * watchdog_s / 2, gaps  # every WatchdogSec/2, not faster

    # What it told the journal.
    entries = [parse_entry(d) for _, d in journal.got]
    states = {e["STATE"] for e in entries if "STATE" in e}
    assert {"idle", "listening", "thinking", "speaking"} <= states, states
    turns = [e for e in entries if "TURN_ID" in e]
    assert turns and int(turns[0]["E2E_LATENCY_MS"]) > 0 and "END_OF_UTTERANCE_DELAY_MS" in turns[0], turns
    gpio = [e for e in entries if e["MESSAGE"].startswith("gpio:")]
    assert len(gpio) == 1 and gpio[0]["MESSAGE"].startswith("gpio: no usable GPIO on this board"), gpio
    assert gpio[0]["PRIORITY"] == "4"
    messages = [e["MESSAGE"] for e in entries]
    assert "config: activation.mode = 'always' (was 'wake'), now" in messages, messages
    assert any(m == "SIGTERM: stopping" for m in messages), messages

    users = [ln[len("user: "):] for ln in proc.lines if ln.startswith("user: ")]
    assert len(users) == 2 and {"capital", "france"} <= words(users[0]) and {"legs", "spider"} <= words(users[1]), \
        proc.out
    assert stopped_in < stop_timeout
    with contextlib.suppress(Exception):
        logging.getLogger(__name__).info("stopped %.1f s after SIGTERM", stopped_in)


# -- reloading the config file -------------------------------------------------------------


async def test_reload_keeps_the_remote_changes_over_the_edited_file(tmp_path: Path) -> None:
    from edgeagent.control.errors import ControlError
    from edgeagent.control.store import ConfigStore

    store = ConfigStore.open(Config(), tmp_path / "remote-config.json")
    await store.set({"tts": {"speed": 1.2}}, None)
    edited = load(None, env={}, overrides=["tts.speed=0.8", "activation.mode=always"])
    seen: list[list[str]] = []

    async def refuse(cfg: Config, changes: list) -> None:  # type: ignore[type-arg]
        seen.append([c.path for c in changes])
        raise ControlError.one("", "apply_failed", "not now")

    with pytest.raises(ControlError):
        await store.rebase(edited, refuse)
    assert store.config.activation.mode == "wake" and store.base == Config()  # nothing changed
    changes = await store.rebase(edited, lambda cfg, changes: seen.append([c.path for c in changes]))
    assert [c.path for c in changes] == ["activation.mode"] and seen == [["activation.mode"]] * 2
    assert store.config.activation.mode == "always" and store.config.tts.speed == 1.2  # the remote change stays
    assert store.base == edited and store.revision == 1
    await store.flush()


async def test_reload_says_what_waits_for_a_restart(caplog: pytest.LogCaptureFixture) -> None:
    from edgeagent.device.lifecycle import Lifecycle
    from edgeagent.errors import ConfigError

    root = logging.getLogger()
    level = root.level
    edited = load(None, env={}, overrides=["audio.input_device=usb", "log_level=debug"])
    results: list[Config | Exception] = [edited, ConfigError("config.toml: not valid TOML: oops")]

    def reload() -> Config:
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    life = Lifecycle(Config(), reload=reload, env_notify=False)
    try:
        with caplog.at_level(logging.INFO):
            await life._reload()
            assert life.config == edited and root.level == logging.DEBUG
            await life._reload()  # a broken file: logged, the config in effect stays
    finally:
        root.setLevel(level)
    messages = [r.getMessage() for r in caplog.records]
    assert "config: audio.input_device changed in the file: takes effect at the next start" in messages, messages
    assert "config: log_level = debug (was info), now" in messages, messages
    assert "config reload: config.toml: not valid TOML: oops; the config in effect stays" in messages, messages
    assert life.config == edited and life.reloads == 1


JOURNAL_PROBE = r"""
import json, logging, os, socket, struct, sys
sys.path.insert(0, sys.argv[1])
from test_device_systemd import parse_entry
os.makedirs("/run/systemd/journal", exist_ok=True)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
from edgeagent.device.journal import JournalHandler
handler = JournalHandler()  # the standard socket: systemd-python's journal.send
log = logging.getLogger("edgeagent.probe")
log.addHandler(handler)
log.propagate = False
log.warning("probe %s", 1, extra={"TURN_ID": "cd34", "E2E_LATENCY_MS": 512})
sock.settimeout(10)
print(json.dumps({"backend": handler.backend, "entry": parse_entry(sock.recv(1 << 16))}))
"""


def test_journal_with_systemd_python() -> None:
    """systemd-python writes to the standard socket only: a private mount namespace puts ours there."""
    import json
    import subprocess

    proc = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c",
         'mount -t tmpfs none /run && exec "$0" "$@"', sys.executable, "-c", JOURNAL_PROBE,
         str(Path(__file__).resolve().parent)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["backend"] == "systemd"
    entry = got["entry"]
    assert entry["MESSAGE"] == "probe 1" and entry["PRIORITY"] == "4" and entry["SYSLOG_IDENTIFIER"] == "edgeagent"
    assert (entry["TURN_ID"], entry["E2E_LATENCY_MS"]) == ("cd34", "512")
    assert entry["CODE_FUNC"] == "<module>" and entry["LOGGER"] == "edgeagent.probe"


@pytest.mark.livekit
async def test_run_in_a_room_notifies_too(livekit_server: LiveKitServer, tmp_path: Path) -> None:
    """With [livekit] set, `edgeagent run` joins the room: READY=1 after the join, STOPPING=1 and exit 0
    on SIGTERM."""
    notify_name = f"@edgeagent-test-{uuid.uuid4().hex}"
    notify = Listener(b"\0" + notify_name[1:].encode())
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT__")}
    env.update(NOTIFY_SOCKET=notify_name, WATCHDOG_USEC="2000000", EDGEAGENT_STATE=str(tmp_path),
               EDGEAGENT_CONFIG=os.devnull, EDGEAGENT__LIVEKIT__URL=livekit_server.url,
               EDGEAGENT__LIVEKIT__API_KEY=livekit_server.api_key,
               EDGEAGENT__LIVEKIT__API_SECRET=livekit_server.api_secret,
               EDGEAGENT__LIVEKIT__ROOM=f"svc-{uuid.uuid4().hex[:6]}")
    proc = Process(await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeagent", "run", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env))
    try:
        await until(lambda: index_of(notify, "READY=1") is not None, "READY=1", 180, proc)
        # Printed before READY=1 was sent, but the pipe and the notify socket are two channels:
        # READY=1 can be read here first (ci22: the line was not read yet when it was).
        await until(lambda: any(ln.startswith("edgeagent: joining room svc-") for ln in proc.lines),
                    "the joining line", 5, proc)
        await until(lambda: index_of(notify, "WATCHDOG=1") is not None, "a watchdog ping", 5, proc)
        proc.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.proc.wait(), seconds(unit_setting("TimeoutStopSec")))
        await asyncio.wait_for(proc.reader, 5)
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
            await asyncio.wait_for(proc.proc.wait(), 10)
        await asyncio.sleep(0.2)
        notify.close()
    assert code == 0, proc.out
    texts = notify.texts()
    assert texts[0] == "STATUS=loading models" and index_of(notify, "STOPPING=1") is not None, texts
    assert "STATUS=listening" in "\n".join(texts), texts  # a room agent listens all the time
