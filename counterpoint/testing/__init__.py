"""Test scaffolding that ships with Counterpoint, as Beam ships ``apache_beam.testing``.

* :mod:`counterpoint.testing.chain` — the chain world's ground truth (first errors, verdicts) and
  a scripted consensus judge;
* :mod:`counterpoint.testing.worlds` — sampled, verified chain items ready to label;
* :mod:`counterpoint.testing.faults` — a scripted engine that fails, hangs or dies on a schedule;
* :mod:`counterpoint.testing.verifier_faults` — hangs / crashes inside math-verify workers
  (``verifier.fault_injector``);
* :mod:`counterpoint.testing.local_services` — Beam's job service and a worker pool on loopback.

Only tests, benchmarks and this package import it: nothing else under ``counterpoint/`` does. Run
configs reach these plug-ins by ``"module:Class"`` paths, which every worker can import.
"""
