"""Run report, dataset card (loaded back with ``datasets``) and Hub publishing."""

from __future__ import annotations

import base64
import importlib.util

from _paths import TESTS
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from counterpoint import storage
from counterpoint.dataset.card import write_dataset_card
from counterpoint.dataset.hub import push_to_hub
from counterpoint.dataset.publish import GateOptions, run_gate
from counterpoint.dataset.report import build_report
from counterpoint.dataset.verdicts import NotValidated
from counterpoint.errors import VerdictMismatch
from counterpoint.schemas import records

_spec = importlib.util.spec_from_file_location("_cp_output_fixtures", TESTS / "unit" / "validation" / "test_validation.py")
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

FAST_RUNNER = ["--runner=FnApiRunner", "--direct_num_workers=1"]


def _layout(out: Path) -> storage.DatasetLayout:
    return storage.DatasetLayout(str(out))


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """A complete, validated dataset folder (rejects has a single 0-row shard), with report and card."""
    out = tmp_path_factory.mktemp("pub") / "out"
    rows = fixtures.make_rows(n_problems=5, samples=4)
    rows["rejects"] = []
    fixtures.make_output(out, rows=rows)
    # preferences: three full shards and an empty one (a zero-row row group)
    import pyarrow.parquet as pq

    for p in (out / "data" / "preferences").glob("*.parquet"):
        p.unlink()
    prefs = rows["preferences"]
    per = -(-len(prefs) // 3)
    for i in range(4):
        pq.write_table(records.rows_to_table("preferences", prefs[i * per:(i + 1) * per]),
                       fixtures.shard_path(out, "preferences", i, 4), compression="zstd")
    layout = _layout(out)
    report, verdict = run_gate(layout, None, expected=None, quarantine_dir=str(out / "quarantine"),
                               gate=GateOptions(runner_options=FAST_RUNNER))
    assert report.success and verdict.success, report.message()
    build_report(layout)
    write_dataset_card(layout)
    # things that must never be published
    (out / "quarantine" / "trajectories").mkdir(parents=True)
    (out / "quarantine" / "trajectories" / "train-00009-of-00010.parquet").write_bytes(b"bad")
    (out / ".cache" / "huggingface").mkdir(parents=True)
    (out / ".cache" / "huggingface" / "x.lock").write_text("")
    (out / "work").mkdir()
    (out / "work" / "tmp.bin").write_bytes(b"0")
    return out, rows


def test_report_html_is_self_contained(validated, tmp_path):
    out, _ = validated
    html = Path(build_report(_layout(out))).read_text()
    assert html.startswith("<!DOCTYPE html>")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 8
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r'src="(?!data:)', html)  # nothing fetched from elsewhere
    for title in ("Pass rate per problem", "Trajectory length", "First-error position", "Monte Carlo value",
                  "Label balance per config", "Pairs per problem", "Rejects by reason", "Tokens and time per stage",
                  "Validation"):
        assert title in html
    assert "Section failed" not in html
    assert "The rejects config has no rows." in html

    # an outcome-only run: the step sections say the config is absent
    small = tmp_path / "small"
    fixtures.make_output(small, n_problems=3, samples=2, configs=("trajectories", "unpaired", "preferences"))
    html = Path(build_report(_layout(small))).read_text()
    assert "Config <code>step_labels</code> is not present" in html
    assert "Config <code>step_values</code> is not present" in html
    assert "Config <code>rejects</code> is not present" in html
    assert "has not been validated" in html
    assert "Section failed" not in html


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, text[:200]
    return yaml.safe_load(m.group(1))


def _norm(v):
    if isinstance(v, float):
        return round(v, 12)
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def test_card_declares_every_config_and_datasets_loads_them(validated, tmp_path):
    import datasets

    out, rows = validated
    readme = out / "README.md"
    meta = _front_matter(readme)
    assert meta["license"] == "mit"
    assert "text-generation" in meta["task_categories"] and "math" in meta["tags"]
    declared = {c["config_name"]: c for c in meta["configs"]}
    # rejects has zero rows: not loadable with datasets, so not declared (listed as empty in the body)
    assert set(declared) == set(fixtures.PIPELINE_CONFIGS) - {"rejects"}
    assert "`rejects` (empty: not loadable)" in readme.read_text()
    for name, c in declared.items():
        assert c["data_files"] == [{"split": "train", "path": f"data/{name}/train-*.parquet"}]
    assert declared["preferences"]["batch_size"] > 0 and "batch_size" not in declared["trajectories"]
    body = readme.read_text()
    for needle in ("HuggingFaceTB/SmolLM2-135M-Instruct", "math_verify", "0.9.0", "omegaprm", "temperature",
                   "## Validation", "**pass**", "generated_tokens"):
        assert needle in body, needle

    cache = tmp_path / "hf_cache"
    for name in declared:
        ds = datasets.load_dataset(str(out), name, cache_dir=str(cache))
        assert list(ds) == ["train"]
        got = sorted((_norm(r) for r in ds["train"]), key=lambda r: r["id"])
        want = sorted((_norm(records.table(name).conform(r)) for r in rows[name]), key=lambda r: r["id"])
        assert got == want, name
        assert ds["train"].column_names == records.table(name).column_names

    # license comes from the run's provenance when given
    summary = json.loads((out / "run_summary.json").read_text())
    summary["provenance"]["license"] = "apache-2.0"
    other = tmp_path / "other"
    fixtures.make_output(other, n_problems=2, samples=2, configs=("trajectories",))
    (other / "run_summary.json").write_text(json.dumps(summary))
    meta = _front_matter(Path(write_dataset_card(_layout(other))))
    assert meta["license"] == "apache-2.0" and [c["config_name"] for c in meta["configs"]] == ["trajectories"]
    assert "not been validated" in (other / "README.md").read_text()


def _expected_files(out: Path):
    want = ["README.md", "report.html"]
    want += [p.relative_to(out).as_posix() for p in (out / "data").glob("**/*.parquet")]
    want += [p.relative_to(out).as_posix() for p in (out / "validation").glob("**/*") if p.is_file()]
    return sorted(want)


def test_push_dry_run_lists_exactly_the_publishable_files(validated, capsys):
    out, _ = validated
    plan = push_to_hub(_layout(out), "someone/counterpoint-test", dry_run=True, private=True)
    paths = [p for p, _ in plan.files]
    assert paths == _expected_files(out)
    assert all(size == (out / p).stat().st_size for p, size in plan.files)
    assert "validation/summary.json" in paths and "validation/data_docs/index.html" in paths
    assert not any(p.startswith(("quarantine/", ".cache/", "work/")) or p == "run_summary.json" for p in paths)
    printed = capsys.readouterr().out
    assert "someone/counterpoint-test" in printed and "private dataset repo" in printed
    for p, size in plan.files:
        assert f"  {p}  {size}" in printed


def test_push_refuses_without_or_with_failed_validation(validated, tmp_path):
    out, _ = validated
    bare = tmp_path / "bare"
    fixtures.make_output(bare, n_problems=2, samples=2, configs=("trajectories",))
    with pytest.raises(NotValidated, match="has not been validated"):
        push_to_hub(_layout(bare), "someone/x", dry_run=True)

    (bare / "validation").mkdir()
    failed = json.loads((out / "validation" / "summary.json").read_text())
    failed["success"] = False
    failed["configs"]["preferences"]["success"] = False
    failed["configs"]["preferences"]["failed_expectations"] = [
        {"expectation_type": "expect_column_pair_values_to_differ"}]
    (bare / "validation" / "summary.json").write_text(json.dumps(failed))
    with pytest.raises(NotValidated, match=r"validation failed for preferences \(expect_column_pair_values_to_differ"):
        push_to_hub(_layout(bare), "someone/x", dry_run=True)

    # a shard that appeared after validation
    ok = json.loads((out / "validation" / "summary.json").read_text())
    (bare / "validation" / "summary.json").write_text(json.dumps(ok))
    with pytest.raises(VerdictMismatch, match="changed since validation"):
        push_to_hub(_layout(bare), "someone/x", dry_run=True)


class _FakeHub(BaseHTTPRequestHandler):
    """Just enough of the Hub HTTP API for create_repo + upload_folder with regular (non-LFS) files."""

    log: list = []
    commits: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.log.append(("GET", self.path, None))
        self._json(404, {"error": "not found"})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        self.log.append(("POST", path, self.headers.get("authorization")))
        if path == "/api/repos/create":
            body = json.loads(raw)
            self.log[-1] = ("POST", path, body)
            return self._json(200, {"url": f"http://{self.headers['host']}/datasets/{body['organization']}/{body['name']}"})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        m = re.match(r"^/api/datasets/([^/]+/[^/]+)/preupload/main$", path)
        if m:
            files = json.loads(raw)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        m = re.match(r"^/api/datasets/([^/]+/[^/]+)/commit/main$", path)
        if m:
            lines = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            self.commits.append({"repo": m.group(1), "header": lines[0], "files": files,
                                 "other": [x for x in lines[1:] if x["key"] != "file"]})
            return self._json(200, {"commitUrl": f"http://{self.headers['host']}/datasets/{m.group(1)}/commit/{'a' * 40}",
                                    "commitOid": "a" * 40})
        return self._json(404, {"error": f"unexpected {path}"})


def test_push_to_local_fake_hub(validated, monkeypatch):
    out, _ = validated
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # The test session runs with HF_HUB_OFFLINE=1 (nothing may reach the internet); this upload only
    # talks to the fake Hub on 127.0.0.1.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    _FakeHub.log, _FakeHub.commits = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        plan = push_to_hub(_layout(out), "someone/counterpoint-test", private=True, token="hf_fake_token",
                           endpoint=endpoint)
    finally:
        server.shutdown()
        server.server_close()
    create = [b for m, p, b in _FakeHub.log if p == "/api/repos/create"]
    assert len(create) == 1, create
    body = create[0]
    assert (body["name"], body["organization"], body["type"]) == ("counterpoint-test", "someone", "dataset")
    assert body.get("private") is True or body.get("visibility") == "private", body
    assert any(p.endswith("/preupload/main") for _, p, _ in _FakeHub.log)
    repo = "/api/datasets/someone/counterpoint-test"
    print("\n[fake hub] requests:", [(m, p) for m, p, _ in _FakeHub.log], "commits:", len(_FakeHub.commits))
    assert {p for _, p, _ in _FakeHub.log} <= {"/api/repos/create", "/api/validate-yaml", f"{repo}/preupload/main",
                                               f"{repo}/commit/main"}
    assert all(c["repo"] == "someone/counterpoint-test" for c in _FakeHub.commits)
    committed = {}
    for c in _FakeHub.commits:
        committed.update(c["files"])
    assert sorted(committed) == [p for p, _ in plan.files] == _expected_files(out)
    for p, content in committed.items():
        assert content == (out / p).read_bytes(), p
    assert not any(c["other"] for c in _FakeHub.commits)  # no deletions, no LFS pointers
    assert plan.commit_url.endswith("a" * 40) and not plan.dry_run
    auth = {a for m, p, a in _FakeHub.log if p != "/api/repos/create"}
    assert auth == {"Bearer hf_fake_token"}
