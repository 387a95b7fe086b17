"""edgeagent: an on-device voice agent for single-board computers."""

import os

# llama.cpp and CTranslate2 (Whisper) each bring an OpenMP runtime (libgomp). Its
# default is to spin 300k rounds before sleeping: Whisper's idle threads then steal the
# cores from the LLM (105 tok/s alone, 36 with Whisper loaded, SmolLM2-135M on 2 cores).
# Fully passive waiting is worse (25 tok/s: every token's barriers go through the kernel).
# A short spin keeps both: 95-100 tok/s with every stage loaded. libgomp reads this once,
# when it is loaded, and the stages load in parallel threads, so it is set here, before
# any of them; an explicit setting in the environment wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

__version__ = "0.1.0"
__all__ = ["__version__"]
