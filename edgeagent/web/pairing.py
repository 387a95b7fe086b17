"""Who may use the console: a pairing code (or ``web.password``) traded for a session token.

With ``web.password`` unset, the first run makes an 8-digit pairing code, keeps it in
the state directory (``web-pairing-code``, mode 0600) and prints it; later runs print
where it is kept. A browser that gives the code (``POST /api/pair``) gets a random
session token, valid until the board restarts or :data:`TOKEN_TTL_S` pass; every
other request but the console page itself needs it. Wrong codes are counted: after
:data:`MAX_FAILURES` within :data:`FAILURE_WINDOW_S`, pairing is refused for the rest
of the window, whatever the code.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edgeagent.control.atomic import write_atomic

log = logging.getLogger(__name__)

CODE_FILE = "web-pairing-code"
TOKEN_TTL_S = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
MAX_TOKENS = 64


def normalise(code: str) -> str:
    """A code as typed: spaces and dashes are not part of it."""
    return "".join(ch for ch in code if ch not in " -\t")


def new_code() -> str:
    digits = f"{secrets.randbelow(10**8):08d}"
    return f"{digits[:4]}-{digits[4:]}"


class Pairing:
    """The pairing secret, the failure count and the session tokens; see the module docs."""

    def __init__(self, secret: str, *, source: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.secret, self.source, self.clock = secret, source, clock
        self._tokens: dict[str, float] = {}  # token -> expiry
        self._failures: deque[float] = deque()

    @classmethod
    def open(cls, password: str | None, state: Path) -> Pairing:
        """``web.password``, or the pairing code kept in ``state`` (made and printed on the first run)."""
        if password:
            log.info("web console: browsers pair with web.password")
            return cls(password, source="web.password")
        path = state / CODE_FILE
        try:
            code = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            code = ""
        if len(normalise(code)) < 6:
            code = new_code()
            state.mkdir(parents=True, exist_ok=True)
            write_atomic(path, (code + "\n").encode(), mode=0o600)
            print(f"edgeagent: web console pairing code: {code} (kept in {path}; delete it for a new one)",
                  flush=True)
            log.warning("web console: new pairing code %s (kept in %s)", code, path)
        else:
            log.info("web console: the pairing code is in %s", path)
        return cls(code, source=str(path))

    def locked_for(self) -> float:
        """Seconds until pairing is allowed again after too many wrong codes (0: allowed)."""
        now = self.clock()
        while self._failures and now - self._failures[0] > FAILURE_WINDOW_S:
            self._failures.popleft()
        if len(self._failures) < MAX_FAILURES:
            return 0.0
        return max(0.1, FAILURE_WINDOW_S - (now - self._failures[0]))

    def pair(self, code: str) -> str | None:
        """A new session token for the right code; None (counted) for a wrong one. Check
        :meth:`locked_for` first."""
        if self.source == "web.password":
            given, wanted = code, self.secret
        else:
            given, wanted = normalise(code), normalise(self.secret)
        if not hmac.compare_digest(given.encode("utf-8", "replace"), wanted.encode("utf-8", "replace")):
            self._failures.append(self.clock())
            return None
        now = self.clock()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        while len(self._tokens) >= MAX_TOKENS:  # the oldest go first
            self._tokens.pop(next(iter(self._tokens)))
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + TOKEN_TTL_S
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        now = self.clock()
        for known, expiry in list(self._tokens.items()):
            if hmac.compare_digest(known, token):
                return expiry > now
        return False
