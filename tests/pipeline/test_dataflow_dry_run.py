"""Dataflow dry run: the whole corpus job is built for Dataflow, and its size does not depend on the input's.

Beam's ``DataflowRunner`` with ``--dry_run=True`` (``TestOptions``) runs every step
of a submission up to the API call: PTransform overrides, the portable pipeline
proto with the Docker environment of ``--sdk_container_image``, the pre-optimised
(combiner-packed, stage-sorted) proto that would be staged as ``pipeline.pb``, and
the ``dataflow.Job`` — then returns instead of staging files or calling the service
(Beam 2.77 ``dataflow_runner.py``: ``if test_options.dry_run: return result``; the
GCS soft-delete check is skipped under ``dry_run`` too; ``--no_auth`` skips
credentials). The job's ``Environment`` (worker pool, SDK images, experiments,
service options, pipeline options: the body of the ``CreateJobRequest``) is built
here the way ``DataflowApplicationClient.create_job_description`` builds it, minus
the upload. Sockets are blocked for the whole module: nothing may reach a network.

Two jobs, each built for 1,000 and for 100,000 problems: generated problems sampled on a
server pool and labelled with OmegaPRM; and local JSONL.gz files holding 1,000 and
100,000 problems (which the driver must never open). Measured: the serialized pipeline
proto (what Dataflow stages as ``pipeline.pb`` and builds its job graph from, which has a
size limit) and the job JSON. Both must be equal up to a few bytes (the digits of ``num_problems``
in pickled configs and options; Beam's pickles also vary by a few bytes between
identical builds).
A control shows the measure catches a driver-side problem list: inlining the
problems with ``beam.Create`` grows the job by tens of bytes per problem (compressed).

Needs the ``gcp`` extra (``pip install -e '.[gcp]'``); skipped without it. About 15 s on
the project's 2-core machine (each build takes 1-2.5 s).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import tempfile
from typing import Dict, List

import pytest

apiclient = pytest.importorskip(
    "apache_beam.runners.dataflow.internal.apiclient", reason="needs the gcp extra: pip install -e '.[gcp]'")

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions  # noqa: E402

from counterpoint import storage  # noqa: E402
from counterpoint.generators.scripted import chain_problem  # noqa: E402
from counterpoint.pipelines.generate_corpus import build_pipeline, check_config, resolve_config  # noqa: E402

IMAGE = "us-docker.pkg.dev/cp-test/counterpoint/counterpoint:gpu"
ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
# The Dataflow GPU recipe of docs/production.md, with test project and bucket names.
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=cp-test",
    "--region=us-central1",
    "--temp_location=gs://cp-test-bucket/tmp",
    "--staging_location=gs://cp-test-bucket/staging",
    "--job_name=counterpoint-dry-run",
    "--no_auth",
    "--dry_run=True",
    "--sdk_location=container",
    f"--sdk_container_image={IMAGE}",
    "--machine_type=g2-standard-8",
    f"--dataflow_service_options={ACCELERATOR}",
    "--experiments=no_use_multiple_sdk_containers",
    "--number_of_worker_harness_threads=1",
    "--max_num_workers=4",
    "--disk_size_gb=100",
]
# Beam pickles closures and configs with some byte-level variance between identical builds
# (measured: up to 16 bytes on ~370 KB); the digits of num_problems add a few more.
MAX_GROWTH_BYTES = 64
SIZES = (1_000, 100_000)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any attempt to resolve a name or open a connection fails the test."""

    def blocked(*args, **kwargs):
        raise AssertionError(f"network access during a dry run: {args[:2]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", blocked)
    # Beam's stager writes the pickled main session etc. into a temporary folder: keep it in tmp_path.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def dry_run(build) -> Dict[str, object]:
    """Runs ``build(pipeline, options)`` through DataflowRunner --dry_run; returns what would be submitted."""

    def submit(extra: List[str]):
        options = PipelineOptions(DATAFLOW + extra)
        options.view_as(SetupOptions).save_main_session = True  # as counterpoint run does
        p = beam.Pipeline(options=options)
        build(p, options)
        result = p.run()
        job = result.job  # apiclient.Job: the pipeline proto that would be staged, the Job message
        pipeline_bytes = job.proto_pipeline.SerializeToString()
        job.proto.environment = apiclient.Environment(
            packages=[], options=job.options, environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
            proto_pipeline_staged_url=f"{job.google_cloud_options.staging_location}/pipeline.pb",
            proto_pipeline=job.proto_pipeline, pipeline_proto_hash=hashlib.sha256(pipeline_bytes).hexdigest(),
        ).proto
        return {"pipeline_bytes": len(pipeline_bytes), "job_json": job.json(), "proto": job.proto_pipeline,
                "state": result.state}

    return submit


def corpus_job(extra: List[str]) -> Dict[str, object]:
    """The corpus pipeline exactly as ``generate_corpus.run`` builds it, submitted as a Dataflow dry run.

    (``run`` itself also clears the output folder's staging area before building, which on gs://
    needs credentials: the job it submits is this one.)
    """

    def build(p, options):
        cfg = check_config(resolve_config(options))
        layout = storage.OutputLayout(cfg.output)
        build_pipeline(p, cfg, layout, layout.staging("dry-run"))

    return dry_run(build)(extra)


def transform_names(proto) -> set:
    return {t.unique_name for t in proto.components.transforms.values()}


def assert_flat(small: Dict[str, object], large: Dict[str, object]) -> None:
    grow = large["pipeline_bytes"] - small["pipeline_bytes"]
    assert abs(grow) <= MAX_GROWTH_BYTES, (
        f"pipeline proto grew by {grow} bytes from {SIZES[0]} to {SIZES[1]} problems "
        f"({small['pipeline_bytes']} -> {large['pipeline_bytes']})")
    job_grow = len(large["job_json"]) - len(small["job_json"])
    assert abs(job_grow) <= MAX_GROWTH_BYTES, f"job JSON grew by {job_grow} bytes"


def test_procedural_source_on_a_server_pool_with_omegaprm_builds_a_flat_dataflow_job():
    """Problems generated by workers, sampled on an OpenAI-compatible server pool, labelled with OmegaPRM."""
    common = ["--source", "procedural", "--server-url", "http://vllm-0:8000", "--server-url", "http://vllm-1:8000",
              "--model", "Qwen/Qwen2.5-Math-1.5B-Instruct", "--labeler", "omegaprm", "--samples", "16",
              "--num-shards", "32", "--output", "gs://cp-test-bucket/corpus"]
    small, large = (corpus_job(common + ["--num-problems", str(n)]) for n in SIZES)

    assert str(small["state"]) == "DONE"  # the dry run's result: built, not submitted
    names = transform_names(large["proto"])
    # A labelled run samples, verifies and labels in one engine stream per bundle (issue 18).
    for step in ("ReadProblems", "DedupeAndResume/JoinCheckpoints", "SampleAndLabel/BatchForStream",
                 "SampleAndLabel/SampleAndLabel", "PairAndCheckpoint/OutcomePairs", "PairAndCheckpoint/Checkpoint", "WriteConfigs",
                 "RunStats", "WriteConfigs/Write[step_labels]"):
        assert step in names, f"{step} missing from the Dataflow job"
    job = json.loads(large["job_json"])
    env = job["environment"]
    assert job["type"] == "JOB_TYPE_BATCH"
    assert env["serviceOptions"] == [ACCELERATOR]
    assert "no_use_multiple_sdk_containers" in env["experiments"]
    assert "use_multiple_sdk_containers" not in env["experiments"]
    pool = env["workerPools"][0]
    assert pool["machineType"] == "g2-standard-8" and pool["numThreadsPerWorker"] == 1
    assert [i["containerImage"] for i in pool["sdkHarnessContainerImages"]] == [IMAGE]
    options = env["sdkPipelineOptions"]["options"]
    assert options["cp_num_problems"] == SIZES[1] and options["cp_server_url"] == ["http://vllm-0:8000",
                                                                                   "http://vllm-1:8000"]
    assert_flat(small, large)


@pytest.fixture(scope="module")
def problem_files(tmp_path_factory):
    """JSONL.gz problem files of 1k and 100k problems (same path lengths); the driver must never open them."""
    root = tmp_path_factory.mktemp("problems")
    folders = {}
    for n in SIZES:
        folder = root / f"n{n:07d}"
        folder.mkdir()
        per_file = n // 4
        for part in range(4):
            rows = (chain_problem(0, i, num_steps=4) for i in range(part * per_file, (part + 1) * per_file))
            lines = (json.dumps({"id": r["problem_id"], "question": r["question"], "answer": r["gold_answer"]})
                     for r in rows)
            (folder / f"part-{part}.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode(), 1))
        folders[n] = folder
    return folders


def test_file_source_job_does_not_grow_with_the_files(problem_files):
    """The same glob over 1k- and 100k-problem files, capped at the file size: files are matched, read and
    counted (the first-N cap) by workers, never by the driver."""
    jobs = []
    for n in SIZES:
        folder = problem_files[n]
        assert sum(len(gzip.decompress(f.read_bytes()).splitlines()) for f in folder.glob("*.gz")) == n
        jobs.append(corpus_job(["--input", str(folder / "*.jsonl.gz"), "--preset", "gsm8k", "--num-problems", str(n),
                                "--generator", "scripted", "--samples", "2", "--labeler", "omegaprm",
                                # pinned: auto shards follow --num-problems (a setting), not the files
                                "--num-shards", "8", "--output", "gs://cp-test-bucket/corpus"]))
    names = transform_names(jobs[1]["proto"])
    assert {"ReadProblems/MatchFiles", "ReadProblems/ReadFiles", "ReadProblems/KeepFirstN"} <= names
    assert_flat(*jobs)


def test_the_measure_catches_problems_inlined_by_the_driver():
    """Control: a job that carries its problems in the graph (``beam.Create(list)``) grows with them."""

    def inlined(n):
        def build(p, options):
            problems = [chain_problem(0, i, num_steps=4) for i in range(n)]
            _ = p | "Problems" >> beam.Create(problems) | "Ids" >> beam.Map(lambda r: r["problem_id"])
        return dry_run(build)([])

    small, large = inlined(1_000), inlined(2_000)
    per_problem = (large["pipeline_bytes"] - small["pipeline_bytes"]) / 1_000
    assert per_problem > 10, per_problem  # Create pickles and zlib-compresses its values
    with pytest.raises(AssertionError, match="pipeline proto grew"):
        assert_flat(small, large)
