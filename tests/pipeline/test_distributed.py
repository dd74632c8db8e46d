"""Distributed for real: the portable-runner topology and a remote (S3) output, on loopback.

* Beam's job service (``local_job_service_main``) in its own process, with SDK workers
  from an external worker pool (``worker_pool_main``, ``--environment_type=EXTERNAL``)
  in another: the topology of Flink or Spark with Python worker pools (and of
  Dataflow Runner v2). The corpus pipeline (scripted engine, OmegaPRM labeller on)
  must write exactly the records the in-process FnApiRunner writes.
* ``--output s3://...`` against moto's S3 server on loopback (a real S3 API): run,
  ``validate``, ``report``, ``push --dry-run``, every config read back through the
  endpoint; and a run that fails its checks leaves the published objects untouched.

Every service is started and stopped by the tests themselves.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from counterpoint import cli, storage
from counterpoint.testing import local_services
from counterpoint.config import from_dict
from counterpoint.pipelines.generate_corpus import run
from counterpoint.schemas import records

BIN = str(Path(sys.executable).parent)
CONFIGS = list(records.OUTCOME_CONFIGS) + list(records.STEP_CONFIGS)


def _config(out, **overrides):
    cfg = {
        "source": {"kind": "chain", "num_problems": 8, "min_ops": 4, "max_ops": 6},
        "generator": {"kind": "scripted", "seed": 1, "scripted": {"policy": "chain", "step_error_rate": 0.15}},
        "samples_per_problem": 4,
        "batch_size": 3,
        "labeler": "omegaprm",
        "labeling": {"omegaprm": {"k": 4, "search_limit": 6}},
        "labeling_batch_size": 4,
        "report": False,
        "quiet": True,
        "output": str(out),
    }
    cfg.update(overrides)
    return from_dict(cfg)


def _records(read, configs=CONFIGS):
    """Every config as sorted canonical JSON records."""
    return {c: sorted(json.dumps(r, sort_keys=True) for r in read(c)) for c in configs}


def _local_reader(out: Path):
    return lambda config: storage.DatasetLayout(str(out)).read_table(config).to_pylist()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job on the in-process FnApiRunner."""
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = run(["--runner=FnApiRunner"], save_main_session=False, config=_config(out))
    assert summary["counts"]["rows_step_labels"] > 0 and summary["counts"]["pairs"] > 0
    return out, summary, _records(_local_reader(out))


# ---------------------------------------------------------------------------
# Portable runner: job service + external worker pool, each in its own process
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    logs = tmp_path_factory.mktemp("services")
    with local_services.portable_services(str(logs)) as services:
        yield services, logs


def test_portable_runner_with_an_external_worker_pool_writes_the_same_records(tmp_path, reference,
                                                                             portable_services):
    services, logs = portable_services
    ref_out, ref_summary, ref_records = reference
    out = tmp_path / "out"
    summary = run(services.options, save_main_session=False, config=_config(out))
    got = _records(_local_reader(out))
    for config in CONFIGS:
        assert got[config] == ref_records[config], config
    assert summary["counts"] == ref_summary["counts"]
    assert summary["validation"]["success"] is True
    # The SDK workers really ran in the pool's process tree (it logs every worker it starts).
    assert "Starting worker with command" in (logs / "worker_pool.log").read_text(errors="replace")


# ---------------------------------------------------------------------------
# S3 (moto's server mode: a real S3 API on loopback)
# ---------------------------------------------------------------------------
BUCKET = "corpus"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("apache_beam.io.aws.s3filesystem")
    port = local_services.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = local_services.start_service([os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                          port, str(log))
    url = f"http://127.0.0.1:{port}"
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    client = boto3.client("s3", endpoint_url=url, **creds)
    client.create_bucket(Bucket=BUCKET)
    options = [f"--s3_endpoint_url={url}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
               "--s3_region_name=us-east-1"]
    yield url, client, options
    local_services.stop_services(server)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _objects(client, prefix):
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = o["ETag"]
    return out


def _live_prefix(client, prefix):
    """``versions/<id>/``: the live version the manifest of the output at ``prefix`` names."""
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=prefix + "counterpoint.json")["Body"].read())
    return f"versions/{manifest['live']}/"


def _published_objects(client, prefix):
    """Every object of the output outside its working area (``_work/``, ``quarantine/``)."""
    return {k: e for k, e in _objects(client, prefix).items() if not k.startswith(("_work/", "quarantine/"))}


def _s3_reader(url, prefix):
    import pyarrow.dataset as pads
    from pyarrow import fs

    s3fs = fs.S3FileSystem(endpoint_override=url, scheme="http", access_key="testing", secret_key="testing",
                           region="us-east-1")

    def read(config):
        return pads.dataset(f"{BUCKET}/{prefix}data/{config}", filesystem=s3fs, format="parquet").to_table().to_pylist()

    return read


def test_s3_output_end_to_end_run_validate_report_push(tmp_path, reference, s3, capsys):
    url, client, options = s3
    ref_out, ref_summary, ref_records = reference
    cfg_path = tmp_path / "run.json"
    cfg_path.write_text(json.dumps(_config("s3://unused").to_dict()))
    out = f"s3://{BUCKET}/runs/r1"
    assert cli.main(["run", "--config", str(cfg_path), "--output", out, "--runner=FnApiRunner", *options]) == 0
    assert "accounting: 8 in = 8 with output + 0 rejected  [ok]" in capsys.readouterr().out

    keys = _objects(client, "runs/r1/")
    live = _live_prefix(client, "runs/r1/")  # "versions/<id>/": the version the manifest names
    assert "README.md" in keys and "counterpoint.json" in keys, sorted(keys)
    for name in ("README.md", "run_summary.json", "run_config.json", "validation/summary.json"):
        assert live + name in keys, sorted(keys)
    assert not [k for k in keys if k.startswith("_work/staging")], "staging must be gone after publishing"
    assert not [k for k in keys if k.startswith("_work/lock")], "the lock must be released"
    # Every config, read back through the S3 API, equals the local run's records.
    got = _records(_s3_reader(url, "runs/r1/" + live))
    for config in CONFIGS:
        assert got[config] == ref_records[config], config

    assert cli.main(["validate", out, *options]) == 0
    assert f"Validation passed for s3://corpus/runs/r1/{live}".rstrip("/") in capsys.readouterr().out
    assert cli.main(["report", out, *options]) == 0
    assert capsys.readouterr().out.strip() == f"{out}/{live}report.html"
    html = client.get_object(Bucket=BUCKET, Key=f"runs/r1/{live}report.html")["Body"].read().decode()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64" in html
    card = client.get_object(Bucket=BUCKET, Key="runs/r1/README.md")["Body"].read().decode()
    assert "config_name: step_labels" in card

    assert cli.main(["push", out, "--repo-id", "org/name", "--dry-run", *options]) == 0
    printed = capsys.readouterr().out
    listed = {p: int(n) for p, n in re.findall(r"^  (\S+)  (\d+)$", printed, re.MULTILINE)}
    data = {k for k in _objects(client, "runs/r1/" + live) if k.startswith("data/")}
    assert {p for p in listed if p.startswith("data/")} == data
    assert "README.md" in listed and not [p for p in listed if p.startswith(("_work", "quarantine"))]

    # A run that fails a check publishes nothing: the manifest, the cards and every version's objects
    # stay exactly as they were.
    before = _published_objects(client, "runs/r1/")
    assert cli.main(["run", "--config", str(cfg_path), "--output", out, "--runner=FnApiRunner",
                     "--min-rows", "preferences=100000", "--seed", "9", *options]) == 1  # a failed check: exit 1
    assert "the published dataset was left as it was" in capsys.readouterr().err
    assert _published_objects(client, "runs/r1/") == before
    runs = {k.split("/")[2] for k in _objects(client, "runs/r1/") if k.startswith("_work/runs/")}
    assert len(runs) == 2  # both runs left a record; only the first was published


def test_evaluation_sets_on_s3_are_matched_and_read_through_beam_filesystems(s3):
    """``--decontaminate s3://...``: the driver's check and the workers' reader go through Beam's S3 filesystem."""
    import gzip
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.options.pipeline_options import PipelineOptions

    from counterpoint import storage
    from counterpoint.clean.decontam import DecontaminationConfig, EvalItem, read_eval_file
    from counterpoint.errors import ConfigError

    url, client, options = s3
    storage.configure(PipelineOptions(options))
    rows = [{"unique_id": "t/1", "problem": "Tom has 3 apples and buys 4 more. How many apples now?", "answer": "7"}]
    client.put_object(Bucket=BUCKET, Key="bench/math.jsonl.gz",
                      Body=gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"id": "g-1", "question": "Ann reads 5 pages a day. How many in a week?"}]), buf)
    client.put_object(Bucket=BUCKET, Key="bench/gsm.parquet", Body=buf.getvalue())
    DecontaminationConfig(paths=[f"s3://{BUCKET}/bench/*"]).check()
    with pytest.raises(ConfigError, match="no file matches"):
        DecontaminationConfig(paths=[f"s3://{BUCKET}/nothing/*.jsonl"]).check()
    assert list(read_eval_file(f"s3://{BUCKET}/bench/math.jsonl.gz", "math")) == [
        EvalItem("math", "t/1", rows[0]["problem"])]
    assert list(read_eval_file(f"s3://{BUCKET}/bench/gsm.parquet", "gsm")) == [
        EvalItem("gsm", "g-1", "Ann reads 5 pages a day. How many in a week?")]
