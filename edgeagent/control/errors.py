"""The one error of remote configuration: a list of structured problems, each naming its field.

A remote controller gets every problem found in its request at once, as
``{"path": "tts.speed", "code": "out_of_range", "reason": "..."}`` items, so a
form can mark each field. Codes:

- ``too_large``: the payload is over ``control.max_payload_bytes``
- ``not_json``: the payload is not UTF-8 JSON (NaN and Infinity are not JSON either)
- ``bad_shape``: the JSON is not an object, or a part of it has the wrong structure
- ``unsupported_version``: ``"v"`` is missing or not a protocol version this device speaks
- ``missing``: a required member of the request is absent
- ``unknown_key``: no such section or setting
- ``wrong_type``: the value is not of the setting's JSON type (no coercion: "1" is not 1, true is not 1)
- ``out_of_range``: a number outside its range, or a word outside its set of choices
- ``bad_value``: a value of the right type that is not acceptable (empty, too long, listed twice)
- ``read_only``: the setting cannot be changed remotely
- ``secret_not_allowed``: a secret, and ``control.allow_secrets`` is off
- ``invalid``: settings that do not fit together (the config's own checks)
- ``stale_revision``: the config changed since the revision the request was based on
- ``apply_failed``: the change was valid but could not be put into effect; it was rolled back
- ``write_failed``: the change could not be saved (a full or read-only disk); nothing changed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeagent.errors import EdgeAgentError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request. ``path`` is dotted ("tts.speed"); "" is the whole request."""

    path: str
    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "reason": self.reason}


class ControlError(EdgeAgentError):
    """A remote config request was refused; nothing was changed.

    ``problems`` lists everything found (at least one); ``code`` is the first
    one's code. ``revision`` is the current revision where it helps the caller
    (``stale_revision``, ``apply_failed``).
    """

    def __init__(self, problems: list[Problem], *, revision: int | None = None) -> None:
        if not problems:
            raise ValueError("ControlError needs at least one problem")
        self.problems = list(problems)
        self.revision = revision
        text = "; ".join(f"{p.path}: {p.reason}" if p.path else p.reason for p in self.problems)
        super().__init__(text)

    @classmethod
    def one(cls, path: str, code: str, reason: str, *, revision: int | None = None) -> ControlError:
        return cls([Problem(path, code, reason)], revision=revision)

    @property
    def code(self) -> str:
        return self.problems[0].code

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a reply carries."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": str(self),
            "problems": [p.to_dict() for p in self.problems],
        }
        if self.revision is not None:
            out["revision"] = self.revision
        return out
