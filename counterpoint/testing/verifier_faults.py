"""Fault injectors for MathVerifier tests, run inside the spawned worker processes.

Referenced as ``fault_injector="counterpoint.testing.verifier_faults:inject"``
(``MathVerifier`` / ``verifier.fault_injector``); importable in every ``spawn``-ed worker.
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
