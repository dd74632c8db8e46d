"""Great Expectations Data Docs of a validation: the HTML site under ``<validation dir>/data_docs/``.

Input: the trimmed GX results of every shard and config result. Output: the site, built with GX's
site builder in a local scratch folder (it writes to local disk only) and copied to the
validation folder on any filesystem. Data Docs are a convenience: :func:`build_safely` never lets
an error here hide the verdict.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from counterpoint import storage
from counterpoint.schemas import records


def quiet_gx() -> None:
    """GX sets one of its loggers to INFO itself (one line per ephemeral context): back to WARNING."""
    import logging

    import great_expectations  # noqa: F401  (its modules set their levels on import)

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)


def results_of(config: str, part: Dict[str, Any]) -> List[tuple]:
    """``(suite name, batch id, GX result)`` of one config result: each shard's, then the config's."""
    out = [(f"counterpoint.{config}.shard", s["shard"].replace("/", "__"), s["gx_result"])
           for s in part["shards"] if s.get("gx_result")]
    if part.get("gx_result"):
        out.append((f"counterpoint.{config}.config", f"{config}__all_shards", part["gx_result"]))
    return out


def build_data_docs(docs_dir: str, configs: Iterable[str], results: List[tuple], run_name: str,
                    min_rows: Optional[Dict[str, int]] = None) -> Optional[str]:
    """Renders GX Data Docs for ``results`` (``(suite name, batch id, result dict)``) into ``docs_dir``."""
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from counterpoint.validation import suites

    storage.delete_tree(docs_dir)
    with storage.LocalScratch() as scratch:
        context, _, _ = suites.make_context([c for c in configs if c in records.OUTPUT_TABLES], min_rows=min_rows)
        context.add_data_docs_site(
            "counterpoint",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": scratch},
            },
        )
        run_id = RunIdentifier(run_name=run_name, run_time=_dt.datetime.now(_dt.timezone.utc))
        for name, batch_id, result in results:
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=name),
                run_id=run_id,
                batch_identifier=batch_id,
            )
            context.validation_results_store.set(key, ExpectationSuiteValidationResult(**result))
        context.build_data_docs(site_names=["counterpoint"])
        written = storage.upload_tree(scratch, docs_dir)
    index = storage.join(docs_dir, "index.html")
    return index if index in written else None


def build_safely(docs_dir: str, configs: Iterable[str], results: List[tuple],
                 min_rows: Optional[Dict[str, int]] = None) -> Tuple[Optional[str], Optional[str], float]:
    """``(index path or None, error or None, seconds)``: :func:`build_data_docs`, its error caught."""
    run_name = "counterpoint-validation-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    t0 = time.monotonic()
    try:
        return build_data_docs(docs_dir, configs, results, run_name, min_rows), None, time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - Data Docs are a convenience; never let them hide the verdict
        return None, f"{type(e).__name__}: {e}", time.monotonic() - t0
