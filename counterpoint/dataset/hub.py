"""Publishing a validated dataset to the Hugging Face Hub as a dataset repo.

``push_to_hub(layout, repo_id)`` uploads the dataset folder of ``layout`` (an output folder's
live version, which has the Hub layout: ``README.md``, ``data/<config>/``, ``validation/``,
``report.html``). It refuses unless the verdict (:mod:`counterpoint.dataset.verdicts`) passed and
``data/`` holds exactly the shards the gate passed, each with the size and sha256 the gate saw
(:class:`~counterpoint.errors.VerdictMismatch` otherwise); the bytes checked are the bytes
uploaded, in one ``create_commit``. ``ALLOW_PATTERNS`` minus ``IGNORE_PATTERNS`` choose the files
(huggingface_hub's own ``filter_repo_objects``); ``dry_run=True`` checks and lists the same files
and touches nothing remote. The folder may be local, ``gs://`` or ``s3://``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from counterpoint import storage
from counterpoint.dataset.verdicts import Verdict
from counterpoint.errors import VerdictMismatch

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


def _verified_files(dataset: storage.DatasetLayout) -> Dict[str, bytes]:
    """``{path in repo: bytes}`` of every file to upload; each shard's bytes checked against the verdict.

    Refuses (:class:`NotValidated`, :class:`VerdictMismatch`) unless the dataset passed validation
    and ``data/`` holds exactly the shards the gate passed, each with the size and sha256 it saw.
    """
    verdict = Verdict.require(dataset, f"refusing to publish {dataset.dataset_dir}")
    planned = [rel for rel, _ in planned_files(dataset)]
    shards = {}
    for config in verdict.configs:
        for path in verdict.check_file_set(config):
            shards[storage.relpath(path, dataset.dataset_dir)] = verdict.verified_bytes(config, path)
    strays = sorted(r for r in planned if r.startswith(storage.DATA_DIR + "/") and r not in shards)
    if strays:
        raise VerdictMismatch(f"refusing to publish {dataset.dataset_dir}: data/ changed since validation "
                              f"(not validated: {strays}); run `counterpoint validate` again")
    files = {}
    for rel in planned:
        data = shards.get(rel) if rel in shards else storage.read_bytes(storage.join(dataset.dataset_dir, rel))
        if data is not None:
            files[rel] = data
    return files


def planned_files(dataset: storage.DatasetLayout) -> List[Tuple[str, int]]:
    """``(path in repo, size)`` of every file of the dataset's folder the upload sends, sorted."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = dataset.dataset_dir
    rel = {storage.relpath(p, root): size for p, size in storage.match_sizes(storage.join(root, "**"))}
    kept = filter_repo_objects(rel, allow_patterns=list(ALLOW_PATTERNS),
                               ignore_patterns=list(IGNORE_PATTERNS) + list(DEFAULT_IGNORE_PATTERNS))
    return sorted((r, rel[r]) for r in kept)


def push_to_hub(
    dataset: storage.DatasetLayout,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    commit_message: Optional[str] = None,
) -> PushPlan:
    """Publishes a validated dataset (an output folder's live version) as the dataset repo ``repo_id``."""
    if not storage.exists(dataset.card_path):
        from counterpoint.dataset.card import write_dataset_card

        write_dataset_card(dataset)
    files = _verified_files(dataset)
    plan = PushPlan(repo_id=repo_id, files=sorted((r, len(b)) for r, b in files.items()), private=private,
                    endpoint=endpoint, dry_run=dry_run)
    if dry_run:
        print(plan.describe())
        return plan

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    plan.repo_url = str(repo_url)
    # The bytes uploaded are the bytes checked: nothing is read again between the check and the upload.
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data) for rel, data in sorted(files.items())]
    info = api.create_commit(repo_id=repo_id, repo_type=REPO_TYPE, operations=operations,
                             commit_message=commit_message or "Upload Counterpoint dataset")
    plan.commit_url = getattr(info, "commit_url", None) or str(info)
    return plan
