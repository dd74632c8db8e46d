"""Publishing a validated output directory to the Hugging Face Hub as a dataset repo.

``push_to_hub(out_dir, repo_id)`` refuses (``PublishRefused``) unless
``<out>/validation/summary.json`` exists, says ``"success": true`` and covers
exactly the Parquet shards now under ``data/`` (a shard added or changed after
validation must be validated first). It then creates the dataset repo
(``exist_ok=True``) and uploads with ``HfApi.upload_folder`` restricted to
``ALLOW_PATTERNS`` (README.md, data/**, report.html, validation/**) minus
``IGNORE_PATTERNS``: ``quarantine/``, ``run_summary.json`` and any cache/work
folder never leave the machine. ``dry_run=True`` computes the same file list
(with huggingface_hub's own ``filter_repo_objects`` and default ignore
patterns, exactly as ``upload_folder`` does), prints it and touches nothing
remote. A missing README.md is generated first with ``write_dataset_card``.

The output folder may be local, ``gs://`` or ``s3://`` (read through
:mod:`counterpoint.storage`): a local folder goes up with ``upload_folder``, a
remote one file by file in one commit (``create_commit`` with the bytes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Tuple

from counterpoint import storage

ALLOW_PATTERNS = ["README.md", "data/**", "report.html", "validation/**"]
IGNORE_PATTERNS = [
    "quarantine/**",
    "**/.cache/**",
    ".cache/**",
    "**/.parts/**",
    "**/*.tmp",
    "**/.*",
    ".*",
]
REPO_TYPE = "dataset"


class PublishRefused(RuntimeError):
    """The output directory is not fit to publish (unvalidated, failed, or changed since validation)."""


@dataclasses.dataclass
class PushPlan:
    repo_id: str
    files: List[Tuple[str, int]]  # (path in repo, size in bytes), sorted
    private: bool = False
    endpoint: Optional[str] = None
    repo_type: str = REPO_TYPE
    dry_run: bool = False
    repo_url: Optional[str] = None
    commit_url: Optional[str] = None

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        verb = "Would create" if self.dry_run else "Created"
        where = f" on {self.endpoint}" if self.endpoint else ""
        lines = [f"{verb} {'private' if self.private else 'public'} {self.repo_type} repo {self.repo_id}{where} "
                 f"(exist_ok) and {'upload' if self.dry_run else 'uploaded'} {len(self.files)} file(s), "
                 f"{self.total_bytes} bytes:"]
        lines += [f"  {path}  {size}" for path, size in self.files]
        if self.commit_url:
            lines.append(f"commit: {self.commit_url}")
        return "\n".join(lines)

    __str__ = describe


def _check_validation(out: str) -> dict:
    path = storage.DatasetLayout(out).validation_summary
    if not storage.exists(path):
        raise PublishRefused(
            f"refusing to publish {out}: {path} is missing; run `counterpoint validate {out}` first")
    summary = storage.read_json(path)
    if not isinstance(summary, dict):
        raise PublishRefused(f"refusing to publish {out}: {path} is not valid JSON")
    if summary.get("success") is not True:
        failed = [f"{c} ({', '.join(sorted({x.get('expectation_type') or x.get('reason') for x in s.get('failed_expectations', [])}))})"
                  for c, s in (summary.get("configs") or {}).items() if not s.get("success")]
        raise PublishRefused(
            f"refusing to publish {out}: validation failed for {', '.join(failed) or 'unknown configs'}; "
            f"see {path}")
    validated = {
        sh["shard"] for s in (summary.get("configs") or {}).values() for sh in s.get("shards", [])
        if sh.get("success") and not sh.get("quarantined_to")
    }
    # everything under data/ that would be uploaded must be a shard the gate passed
    present = {p for p, _ in planned_files(out) if p.startswith("data/")}
    if present != validated:
        extra, gone = sorted(present - validated), sorted(validated - present)
        raise PublishRefused(
            f"refusing to publish {out}: data/ changed since validation "
            f"(not validated: {extra or 'none'}; validated but missing: {gone or 'none'}); rerun validate_output")
    return summary


def _root(out_dir: str) -> str:
    return os.path.abspath(out_dir) if storage.is_local(out_dir) else out_dir.rstrip("/")


def planned_files(out_dir: str) -> List[Tuple[str, int]]:
    """``(path in repo, size)`` of every file ``upload_folder`` would send, sorted."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    out = _root(out_dir)
    rel = {storage.relpath(p, out): size for p, size in storage.match_sizes(storage.join(out, "**"))}
    kept = filter_repo_objects(rel, allow_patterns=list(ALLOW_PATTERNS),
                               ignore_patterns=list(IGNORE_PATTERNS) + list(DEFAULT_IGNORE_PATTERNS))
    return sorted((r, rel[r]) for r in kept)


def push_to_hub(
    out_dir: str,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    commit_message: Optional[str] = None,
) -> PushPlan:
    """Publishes a validated output directory as the dataset repo ``repo_id``; see the module docstring."""
    out = _root(out_dir)
    _check_validation(out)
    if not storage.exists(storage.DatasetLayout(out).card_path):
        from counterpoint.dataset.card import write_dataset_card

        write_dataset_card(out)
    plan = PushPlan(repo_id=repo_id, files=planned_files(out), private=private, endpoint=endpoint,
                    dry_run=dry_run)
    if dry_run:
        print(plan.describe())
        return plan

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    plan.repo_url = str(repo_url)
    message = commit_message or "Upload Counterpoint dataset"
    if storage.is_local(out):
        info = api.upload_folder(
            folder_path=out,
            repo_id=repo_id,
            repo_type=REPO_TYPE,
            allow_patterns=list(ALLOW_PATTERNS),
            ignore_patterns=list(IGNORE_PATTERNS),
            commit_message=message,
        )
    else:
        from huggingface_hub import CommitOperationAdd

        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=storage.read_bytes(storage.join(out, rel)))
                      for rel, _ in plan.files]
        info = api.create_commit(repo_id=repo_id, repo_type=REPO_TYPE, operations=operations, commit_message=message)
    plan.commit_url = getattr(info, "commit_url", None) or str(info)
    return plan
