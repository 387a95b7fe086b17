"""edgeagent: an on-device voice agent for single-board computers."""

import os

# llama.cpp and CTranslate2 (Whisper) each bring an OpenMP runtime whose threads spin
# while they wait. On a board where STT, LLM and TTS share the cores, a model's spinning
# threads steal time from the next one: right after a Whisper decode the LLM generated
# at half speed (8 tokens in 386 ms instead of 206 ms in one measured turn). libgomp reads
# this once, when it is loaded, and the stages load in parallel threads, so it is set
# here, before any of them; an explicit setting in the environment wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

__version__ = "0.1.0"
__all__ = ["__version__"]
