"""One writer per output folder: an exclusively created lock object, ``<root>/_work/lock.json``.

Acquiring creates the lock with a create that fails when it already exists:

* local disk: the bytes under a private name, then ``link(2)`` to the lock's name, which fails when
  it exists (atomic like ``O_CREAT | O_EXCL`` on POSIX filesystems, NFS included; no reader sees a
  half-written lock);
* ``s3://``: ``PutObject`` with ``If-None-Match: "*"`` (S3 conditional writes; moto and MinIO honour
  it), through boto3 with the endpoint and credentials of the pipeline options;
* ``gs://``: an upload with ``if_generation_match=0`` (GCS preconditions), through google-cloud-storage;
* any other filesystem: an existence check then a write (not atomic: a race between two starts in
  the same instant is not caught there).

The lock records its holder (host, pid, start time, command, a random token). Release deletes it
only when it still holds our token. **Stale locks**: a lock whose holder ran on this host and whose
pid no longer exists is broken automatically (a killed run); any other lock stays until its holder
releases it, and :class:`~counterpoint.errors.OutputLocked` names the holder and the lock file to
delete by hand when that process is known to be gone (no age rule: a run can last days).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from typing import Any, Dict, Optional

from counterpoint.errors import OutputLocked
from counterpoint.storage import files
from counterpoint.storage.layout import now_iso

log = logging.getLogger(__name__)


def _split_bucket(path: str, scheme: str):
    bucket, _, key = path[len(scheme):].partition("/")
    return bucket, key


def _s3_client():
    import boto3
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    o = (files.configured_options() or PipelineOptions([])).view_as(S3Options)
    kwargs = {k: v for k, v in {
        "endpoint_url": o.s3_endpoint_url, "aws_access_key_id": o.s3_access_key_id,
        "aws_secret_access_key": o.s3_secret_access_key, "aws_session_token": o.s3_session_token,
        "region_name": o.s3_region_name}.items() if v}
    if o.s3_verify is not None:
        kwargs["verify"] = o.s3_verify
    if o.s3_disable_ssl:
        kwargs["use_ssl"] = False
    return boto3.client("s3", **kwargs)


def create_exclusive(path: str, data: bytes) -> bool:
    """Creates ``path`` holding ``data`` unless it exists; True when this call created it."""
    if files.is_local(path):
        # The bytes go to a private name first, then link(2) creates ``path`` only if it does not
        # exist (like O_CREAT|O_EXCL, atomic), so a reader never sees a partly written file.
        local = files._local(path)
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = f"{local}.{uuid.uuid4().hex[:8]}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, local)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    if path.startswith("s3://"):
        from botocore.exceptions import ClientError

        bucket, key = _split_bucket(path, "s3://")
        try:
            _s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise
        return True
    if path.startswith("gs://"):
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud import storage as gcs

        bucket, key = _split_bucket(path, "gs://")
        try:
            gcs.Client().bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    if files.exists(path):
        return False
    files.write_bytes(path, data)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: Optional[Dict[str, Any]]) -> bool:
    """A lock held by a process of this host that no longer exists."""
    if not isinstance(holder, dict) or holder.get("host") != socket.gethostname():
        return False
    try:
        return not _pid_alive(int(holder.get("pid")))
    except (TypeError, ValueError):
        return False


class OutputLock:
    """``with OutputLock(layout.lock_path, root, "run"):`` — the folder's one writer, or OutputLocked at once."""

    def __init__(self, path: str, root: str, command: str):
        self.path, self.root, self.command = path, root, command
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": now_iso(),
                       "command": command, "token": uuid.uuid4().hex}

    def acquire(self) -> "OutputLock":
        data = json.dumps(self.holder, sort_keys=True).encode("utf-8")
        if create_exclusive(self.path, data):
            return self
        held = files.read_json(self.path)
        if is_stale(held):
            log.warning("breaking the stale lock %s: its holder (pid %s on this host) is gone", self.path,
                        held.get("pid"))
            files.delete([self.path])
            if create_exclusive(self.path, data):
                return self
            held = files.read_json(self.path)
        who = ("another process" if not isinstance(held, dict) else
               f"`{held.get('command')}` (pid {held.get('pid')} on {held.get('host')}, since {held.get('started_at')})")
        raise OutputLocked(f"{self.root} is being written by {who}: wait for it to finish, or delete {self.path} "
                           "if that process is gone")

    def release(self) -> None:
        held = files.read_json(self.path)
        if isinstance(held, dict) and held.get("token") == self.holder["token"]:
            files.delete([self.path])

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
