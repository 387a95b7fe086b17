"""One llama.cpp model and its KV cache, driven token by token.

:class:`LlamaEngine` keeps the token history that is in the KV cache and, for
each new prompt, keeps the longest common prefix and evaluates only the rest
(the system prompt and earlier turns are evaluated once). Generation and the
end-of-turn probe share this one history, so whichever runs next reuses what
the other left. Not thread safe: call it from the stage's inference thread only.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeagent.errors import ModelError

log = logging.getLogger(__name__)

# GOMP_SPINCOUNT (how long OpenMP threads spin) is set in edgeagent/__init__.py, before any model loads.

MODEL_NAME = "smollm2-135m"
"""The manifest name of the default model."""


def default_model_path() -> Path:
    from edgeagent.model_files.manifest import model_path

    return model_path(MODEL_NAME)


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class LlamaEngine:
    """A loaded GGUF model with a reusable KV cache."""

    def __init__(self, model_path: Path, *, n_ctx: int, n_threads: int, n_batch: int = 512, seed: int = 0,
                 n_gpu_layers: int = 0) -> None:
        import llama_cpp

        self._lib = llama_cpp
        if not model_path.is_file():
            raise ModelError(
                f"LLM model file {model_path} does not exist; fix: edgeagent models pull {MODEL_NAME} "
                "(or pass model_path= an existing .gguf file)"
            )
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                n_batch=n_batch, seed=seed, n_gpu_layers=n_gpu_layers, logits_all=False, verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(
                f"cannot load LLM model {model_path} ({exc}): the file is not a valid GGUF model; "
                f"fix: edgeagent models pull {MODEL_NAME} (or pass model_path= a valid .gguf file)"
            ) from exc
        if n_gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            log.warning("llm.gpu_layers=%d, but this llama-cpp-python was built without GPU support: the "
                        "model runs on the CPU (scripts/setup builds it with CUDA where nvcc is)", n_gpu_layers)
        self.path = model_path
        self.seed = seed
        self.n_ctx: int = min(self.llm.n_ctx(), len(self.llm.input_ids))
        """llama.cpp rounds its context up (384 -> 512 tokens); llama-cpp-python's token array
        has the size asked for, and a prompt longer than that failed to decode."""
        self.n_vocab: int = self.llm.n_vocab()
        self.metadata: dict[str, str] = dict(self.llm.metadata)
        self._vocab = self.llm._model.vocab
        self._tokens: list[int] = []
        self._logits_valid = False
        """The context's logits are those after the last cached token (no decode or cut since)."""

    # -- text <-> tokens ----------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Tokens of prompt text; special tokens written in it (``<|im_end|>``) are parsed."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens give nothing)."""
        return bytes(self.llm.detokenize([token], special=False))

    def special_text(self, token: int) -> str:
        return bytes(self.llm.detokenize([token], special=True)).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """End of generation: EOS, ``<|im_end|>`` and the like."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    @property
    def bos_text(self) -> str:
        return self.special_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""

    @property
    def eos_text(self) -> str:
        return self.special_text(self.llm.token_eos()) if self.llm.token_eos() >= 0 else ""

    # -- the KV cache -------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        """Tokens now in the KV cache."""
        return len(self._tokens)

    def prefill(self, tokens: Sequence[int]) -> int:
        """Make the cache hold exactly ``tokens``, reusing the common prefix; returns the tokens reused.

        At least the last token is evaluated, so :meth:`logits` are those after it.
        """
        if not tokens:
            raise ValueError("empty prompt")
        common = self._common(tokens)
        if common == len(tokens) == len(self._tokens) and self._logits_valid:
            return common  # exactly what is cached, and the logits after it are still there
        keep = min(common, len(tokens) - 1)
        self.truncate(keep)
        self.eval(tokens[keep:])
        return keep

    def prefill_marked(self, tokens: Sequence[int], mark: int) -> npt.NDArray[np.float32] | None:
        """:meth:`prefill` in one batch that also returns the log-softmax of the logits after
        ``tokens[mark]`` (the end-of-turn probe's, inside the reply's prompt). None when the
        new tokens do not fit one batch (nothing done)."""
        keep = min(self._common(tokens), mark, len(tokens) - 1)
        new = list(tokens[keep:])
        if not 0 <= mark < len(tokens) or len(new) > self.llm.n_batch:
            return None
        self.truncate(keep)
        self._decode(new, mark=mark - keep)
        row = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.llm.ctx, mark - keep), shape=(self.n_vocab,))
        return _log_softmax(row)

    def _common(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` are cached already."""
        common = 0
        for a, b in zip(self._tokens, tokens, strict=False):
            if a != b:
                break
            common += 1
        return common

    def truncate(self, n: int) -> None:
        """Forget everything after the first ``n`` tokens."""
        if n < len(self._tokens):
            self.llm.n_tokens = n
            self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
            del self._tokens[n:]
            self._logits_valid = False

    def eval(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` to the cache (one decode per batch)."""
        self._decode(tokens)

    def _decode(self, tokens: Sequence[int], *, mark: int | None = None) -> None:
        """Append ``tokens`` to the cache, one llama.cpp decode per ``n_batch`` of them: the one
        place that checks the context has room and keeps llama.cpp's count of cached tokens and
        ours in step. The logits after the last token are kept; with ``mark``, also those after
        ``tokens[mark]``, which must then lie in the last batch (``llama_get_logits_ith`` reads
        them at ``mark`` minus the start of that batch)."""
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise ValueError(f"context full: {len(self._tokens)} + {len(tokens)} tokens > n_ctx {self.n_ctx}")
        llm = self.llm
        llm.n_tokens = len(self._tokens)
        self._logits_valid = False  # until the decode is through
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        for start in range(0, len(tokens), llm.n_batch):
            batch = list(tokens[start : start + llm.n_batch])
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=False)
            if mark is not None and start <= mark < start + len(batch):
                llm._batch.batch.logits[mark - start] = True
            llm._ctx.decode(llm._batch)
            llm.input_ids[llm.n_tokens : llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
            self._tokens.extend(batch)
        self._logits_valid = bool(tokens)

    def logits(self) -> npt.NDArray[np.float32]:
        """A writable view of the logits after the last evaluated token (valid until the next eval)."""
        ptr = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def logprobs(self) -> npt.NDArray[np.float32]:
        """Log-softmax of :meth:`logits` (a copy)."""
        return _log_softmax(self.logits())

    # -- sampling -----------------------------------------------------------

    def sampler(self, temperature: float, repeat_penalty: float = 1.0, grammar: str | None = None) -> Any:
        """A llama.cpp sampler chain: optional grammar, then greedy (temperature 0) or top-k/p sampling."""
        from llama_cpp import _internals
        from llama_cpp.llama_grammar import LlamaGrammar

        make: Any = _internals.LlamaSampler  # untyped upstream
        s = make()
        if repeat_penalty != 1.0:
            s.add_penalties(self.n_vocab, 64, repeat_penalty, 0.0, 0.0)
        if grammar is not None:
            s.add_grammar(self.llm._model, LlamaGrammar.from_string(grammar, verbose=False))
        if temperature <= 0:
            s.add_greedy()
        else:
            s.add_top_k(40)
            s.add_top_p(0.95, 1)
            s.add_min_p(0.05, 1)
            s.add_temp(temperature)
            # The stream of draws depends on the seed and the prompt alone: the same prompt gets the
            # same reply, whatever was generated (or begun and dropped, see voice/preempt.py) before.
            s.add_dist((self.seed + zlib.crc32(np.asarray(self._tokens, np.int32).tobytes())) & 0xFFFFFFFF)
        return s

    def grammar_sampler(self, temperature: float, grammar: str) -> GrammarSampler:
        return GrammarSampler(self.sampler(temperature), self.sampler(temperature, grammar=grammar))

    def sample(self, sampler: Any) -> int:
        """Sample (and accept) the next token from the current logits; does not evaluate it."""
        if isinstance(sampler, GrammarSampler):
            return sampler.sample(self.llm._ctx)
        return int(sampler.sample(self.llm._ctx, -1))

    def close(self) -> None:
        self._tokens.clear()
        self._logits_valid = False
        self.llm.close()


def _log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x = logits.astype(np.float64)
    out: npt.NDArray[np.float32] = (x - (x.max() + np.log(np.exp(x - x.max()).sum()))).astype(np.float32)
    return out


class GrammarSampler:
    """Grammar-constrained sampling, checked lazily (as llama.cpp's own common sampler does).

    Applying a grammar to the whole vocabulary costs ~15 ms a token here, more
    than the decode itself. So sample without it first and ask the grammar about
    that one token; only when it is refused, sample again under the grammar.
    The result is the same token the full grammar sampler would pick at
    temperature 0.
    """

    def __init__(self, plain: Any, constrained: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._plain = plain
        self._full = constrained  # chain: grammar first (no penalties), then selection
        self._grammar = llama_cpp.llama_sampler_chain_get(constrained.sampler, 0)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._arr = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)

    def sample(self, ctx: Any) -> int:
        lib = self._lib
        token = int(self._plain.sample(ctx, -1))
        cand: Any = self._one[0]
        cand.id, cand.logit, cand.p = token, 1.0, 0.0
        self._arr.size, self._arr.selected = 1, -1
        lib.llama_sampler_apply(self._grammar, ctypes.byref(self._arr))
        if cand.logit != -math.inf:
            lib.llama_sampler_accept(self._grammar, token)
            return token
        return int(self._full.sample(ctx, -1))


class Utf8Stream:
    """Bytes of successive tokens in, whole UTF-8 text out (a character split across tokens waits)."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return str(self._dec.decode(data))

    def finish(self) -> str:
        return str(self._dec.decode(b"", final=True))
