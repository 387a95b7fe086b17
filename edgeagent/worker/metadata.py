"""A dispatch's metadata: settings for that one job, checked like a remote config change.

The metadata of a dispatch (``lk dispatch create --metadata``, ``CreateAgentDispatchRequest.metadata``,
a token's ``RoomAgentDispatch.metadata``) may be a JSON object: a merge patch over the
device's config, the shape ``edgeagent config set`` sends (``{"agent": {"instructions":
"..."}, "tts": {"speed": 1.2}}``), with three shorthands: ``"instructions"`` for
``agent.instructions``, ``"voice"`` for ``tts.model`` and ``"language"`` (see below).

Every setting goes through the checks of remote config (:mod:`edgeagent.control.patch`:
the allow-list, strict JSON types, ranges, no secrets) and must also take effect without a
model load or a rejoin (the settings :data:`~edgeagent.control.keys.HOT` lists:
instructions, speaking rate, turn and interruption options, listening...), except the
job's voice (:data:`VOICE`: ``tts.model``, ``"voice"``, and ``tts.provider``): the worker
loads it for the job (:mod:`edgeagent.worker.voice`); a voice that does not load is one
line and the job speaks with the device's voice. ``language``: the device hears English
(the default Whisper tiny.en is English-only, and no speech recognition here has a language
setting), so ``"en"`` (or ``"en-GB"``...) is accepted and changes nothing, any other
language is refused with the reason. A bad entry never stops the
job: the job runs with the entries that passed, and each problem is one error line.
Metadata that is not a JSON object (plain text) is ignored with one line. The settings
hold for that job only; the device's config is not changed.
"""

from __future__ import annotations

import json
from typing import Any

from edgeagent.config import Config
from edgeagent.control.errors import ControlError, Problem
from edgeagent.control.keys import HOT
from edgeagent.control.patch import build, check_patch

SHORTHANDS = {"instructions": ("agent", "instructions"), "voice": ("tts", "model")}
MAX_BYTES = 16384
VOICE = frozenset({"tts.model", "tts.provider"})
"""The settings that need a model load and that a job may set all the same: its voice."""


def language_problem(cfg: Config, value: Any) -> Problem | None:
    """None when the device hears ``value`` (English), else why the job cannot have it."""
    if not isinstance(value, str) or not value.strip():
        return Problem("language", "wrong_type", 'a language code, e.g. "en"')
    if value.strip().lower().replace("_", "-").split("-")[0] == "en":
        return None
    if cfg.stt.provider == "whisper" and cfg.stt.model is None:
        why = "the speech recognition model (Whisper tiny.en, the default) is English-only"
    else:
        why = f"the speech recognition ({cfg.stt.provider}) hears English here: it has no language setting"
    return Problem("language", "out_of_range", f"{value!r} refused: {why}; the job runs in English")


def _leaves(cfg: Config, patch: dict[str, Any], problems: list[Problem]) -> list[tuple[str, dict[str, Any]]]:
    """The patch split into one-setting patches ``(path, {section: {name: value}})``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for key, value in patch.items():
        if key in SHORTHANDS:
            section, name = SHORTHANDS[key]
            out.append((f"{section}.{name}", {section: {name: value}}))
        elif key == "language":
            if (problem := language_problem(cfg, value)) is not None:
                problems.append(problem)
        elif isinstance(value, dict):
            out.extend((f"{key}.{name}", {key: {name: sub}}) for name, sub in value.items())
        else:
            out.append((key, {key: value}))
    return out


def job_settings(cfg: Config, metadata: str) -> tuple[dict[str, Any], list[Problem]]:
    """``(patch for this job, problems)``: the entries of ``metadata`` that passed, and why the others did not."""
    text = metadata.strip()
    if not text:
        return {}, []
    if len(text.encode()) > MAX_BYTES:
        return {}, [Problem("", "too_large", f"the metadata is over {MAX_BYTES} bytes")]
    try:
        obj = json.loads(text)
    except ValueError:
        return {}, [Problem("", "not_json", "the metadata is not a JSON object; it carries no settings")]
    if not isinstance(obj, dict):
        return {}, [Problem("", "bad_shape", "the metadata is not a JSON object; it carries no settings")]
    problems: list[Problem] = []
    patch: dict[str, Any] = {}
    for path, one in _leaves(cfg, obj, problems):
        try:
            checked = check_patch(cfg, one, allow_secrets=False)
        except ControlError as exc:
            problems.extend(exc.problems)
            continue
        if checked and path not in HOT and path not in VOICE:
            problems.append(Problem(path, "read_only", "not per job: it needs a model load or a rejoin "
                                                       "(set it on the device with edgeagent config set)"))
            continue
        for section, value in checked.items():
            if isinstance(value, dict):
                patch.setdefault(section, {}).update(value)
            else:
                patch[section] = value
    if patch:
        try:
            build(cfg, patch)
        except ControlError as exc:
            return {}, [*problems, *exc.problems]
    return patch, problems


def apply_job_settings(cfg: Config, patch: dict[str, Any]) -> Config:
    """``cfg`` with a patch of :func:`job_settings` (checked there against the same config)."""
    return build(cfg, patch) if patch else cfg


def split_voice(patch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the patch without the voice, the voice's [tts] entries)`` of a :func:`job_settings` patch."""
    tts = dict(patch.get("tts", {}))
    voice = {name: tts.pop(name) for name in ("provider", "model") if name in tts}
    rest = {k: v for k, v in patch.items() if k != "tts"}
    if tts:
        rest["tts"] = tts
    return rest, voice
