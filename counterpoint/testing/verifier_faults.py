"""Fault injectors for MathVerifier tests, run inside the spawned worker processes.

Referenced as ``fault_injector="verifier_faults:inject"``; importable in the
worker because the parent's ``sys.path`` (which pytest puts ``tests/`` on) is
handed to ``spawn``-ed children.
"""

import os
import time


def inject(completion: str, gold: str) -> None:
    if "<<HANG>>" in completion:
        time.sleep(600)
    if "<<CRASH>>" in completion:
        os._exit(7)
    if "<<RAISE>>" in completion:
        raise RuntimeError("injected failure")
