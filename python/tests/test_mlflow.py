"""MLflow tracking (`[tracking]` in a spec) against a real `mlflow server` with its SQLite backend.

The server is started once for the module (it takes ~10 s to come up). Each test runs the `rung`
binary that RUNG_BIN names, and reads back through MLflow's REST API what it logged.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import rung_binary

MLFLOW = Path(sys.executable).parent / "mlflow"
# The first test waits for the server to start: up to three tries of MLFLOW_START_S each.
pytestmark = pytest.mark.timeout(360)
MLFLOW_START_S = 90
# MLflow's telemetry would try to reach the network.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

TRIAL = """\
import json, os
config = json.loads(os.environ["RUNG_CONFIG"])
for step in range(1, 10):
    loss = 10 * config["lr"] + 1.0 / step + (0.3 if config["act"] == "tanh" else 0.0)
    print("rung:report " + json.dumps({"step": step, "loss": loss, "acc": 1 - loss / 10}), flush=True)
"""

# Six trials of nine steps; ASHA (rungs at steps 1, 3 and 9, max_t beyond the last step) stops
# some early, and the others complete.
SPEC = """\
name = "{name}"
metric = "loss"
mode = "min"
num_samples = 6
max_concurrent = 3
seed = 11

[space]
lr = {{ loguniform = [1e-4, 1e-1] }}
act = {{ choice = ["relu", "tanh"] }}

[scheduler]
kind = "asha"
max_t = 27
grace_period = 1
reduction_factor = 3

[trial]
command = ["{python}", "trial.py"]
stop_grace_s = 2

[tracking]
{tracking}
"""


def free_port() -> int:
    """A port that was free a moment ago: `mlflow server` takes a port, not a listener, so another
    process may take it first; the fixture then sees its server exit and tries another."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_sweep(folder: Path, name: str, tracking: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trial.py").write_text(TRIAL)
    spec = folder / "spec.toml"
    spec.write_text(SPEC.format(name=name, python=sys.executable, tracking=tracking))
    return spec


def rung(*args: str, env: "Dict[str, str] | None" = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **QUIET_ENV}
    full_env.pop("MLFLOW_TRACKING_URI", None)  # only what a test sets
    full_env.update(env or {})
    return subprocess.run(
        [str(rung_binary()), *args], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


class MlflowApi:
    """The few REST calls the tests read back with."""

    def __init__(self, url: str) -> None:
        self.base = url + "/api/2.0/mlflow/"

    def get(self, endpoint: str, **query: str) -> Any:
        with urllib.request.urlopen(self.base + endpoint + "?" + urllib.parse.urlencode(query), timeout=10) as answer:
            return json.load(answer)

    def post(self, endpoint: str, body: Dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.base + endpoint, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def runs(self, experiment: str) -> List[Dict[str, Any]]:
        experiment_id = self.get("experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
        runs: List[Dict[str, Any]] = []
        token = None
        while True:
            body: Dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = self.post("runs/search", body)
            runs.extend(page.get("runs", []))
            token = page.get("next_page_token")
            if not token:
                return runs

    def history(self, run_id: str, key: str) -> List[Tuple[int, float]]:
        metrics = self.get("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
        return sorted((int(metric.get("step", 0)), float(metric["value"])) for metric in metrics)


class MlflowServer:
    """`mlflow server` on `port` of 127.0.0.1, SQLite backend, in its own process group."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.url = root, f"http://127.0.0.1:{port}"
        self.log_path = root / f"server-{port}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--default-artifact-root",
                str(root / "artifacts"),
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_ENV},
            start_new_session=True,
        )

    def answers(self) -> bool:
        """Whether it answers /health, and /version with the MLflow installed here (not some other
        server that took the port)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                if answer.status != 200:
                    return False
            with urllib.request.urlopen(self.url + "/version", timeout=2) as answer:
                version = answer.read().decode().strip()
        except (urllib.error.URLError, OSError):
            return False
        expected = importlib.metadata.version("mlflow")
        assert version == expected, f"{self.url} answers as MLflow {version!r}, not the {expected} started"
        return True

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} is missing: install python/requirements-test.lock (scripts/python-env.sh)")
    root = tmp_path_factory.mktemp("mlflow")
    deadline_s = MLFLOW_START_S
    server = None
    try:
        for attempt in range(3):
            server = MlflowServer(root, free_port())
            deadline = time.monotonic() + deadline_s
            while server.process.poll() is None and not server.answers():
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not answer /health in {deadline_s} s:\n{server.output()}")
                time.sleep(0.2)
            if server.process.poll() is None:
                break
            output = server.output()
            server.stop()
            # Only a port taken between free_port() and the server's bind is worth another try.
            if "address already in use" not in output.lower() or attempt == 2:
                pytest.fail(f"mlflow server exited with {server.process.returncode}:\n{output}")
        assert server is not None
        yield server.url
    finally:
        if server is not None:
            server.stop()


def flatten(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def store_reports(db: Path, experiment: str) -> Dict[str, Dict[str, List[Tuple[int, float]]]]:
    """Every report of the experiment, as trial -> metric -> [(step, value)]."""
    with sqlite3.connect(db) as conn:
        (experiment_id,) = conn.execute("SELECT id FROM experiments WHERE name = ?", (experiment,)).fetchone()
        rows = conn.execute(
            "SELECT trial_id, step, metrics FROM reports WHERE experiment_id = ? ORDER BY trial_id, step",
            (experiment_id,),
        ).fetchall()
    reports: Dict[str, Dict[str, List[Tuple[int, float]]]] = {}
    for trial, step, metrics in rows:
        for key, value in json.loads(metrics).items():
            reports.setdefault(f"t{trial}", {}).setdefault(key, []).append((step, float(value)))
    return reports


def test_a_sweep_is_mirrored_into_mlflow(mlflow_url: str, tmp_path: Path) -> None:
    spec = write_sweep(tmp_path, "mirrored", f'mlflow_uri = "{mlflow_url}"\nexperiment = "rung-tests"')
    db = tmp_path / "rung.db"
    done = rung("run", str(spec), "--db", str(db), "-q")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr

    exported = json.loads(rung("export", "--db", str(db), "--format", "json").stdout)
    best = json.loads(rung("best", "--db", str(db), "--json").stdout)
    statuses = {row["status"] for row in exported}
    assert "stopped" in statuses and "completed" in statuses, statuses

    api = MlflowApi(mlflow_url)
    runs = api.runs("rung-tests")
    tags = {run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs}
    parents = [run for run in runs if "mlflow.parentRunId" not in tags[run["info"]["run_id"]]]
    assert len(parents) == 1
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert tags[parent_id]["rung.experiment"] == "mirrored"
    assert tags[parent_id]["rung.best_trial"] == best["trial"]
    assert tags[parent_id]["rung.end_cause"] == "all_trials_done"

    children = {tags[run["info"]["run_id"]]["rung.trial"]: run for run in runs if run is not parent}
    assert sorted(children) == sorted(row["trial_id"] for row in exported)
    reports = store_reports(db, "mirrored")
    for row in exported:
        child = children[row["trial_id"]]
        run_id = child["info"]["run_id"]
        child_tags = tags[run_id]
        assert child_tags["mlflow.parentRunId"] == parent_id
        assert child_tags["mlflow.runName"] == row["trial_id"]
        # Params are the config, numbers in their shortest exact form.
        params = {p["key"]: p["value"] for p in child["data"].get("params", [])}
        config = flatten(row["config"])
        assert sorted(params) == sorted(config)
        for name, value in config.items():
            assert params[name] == value if isinstance(value, str) else float(params[name]) == value, name
        # Every metric at every step, as the store has it.
        assert set(reports[row["trial_id"]]) == {"loss", "acc"}
        for key, history in reports[row["trial_id"]].items():
            assert api.history(run_id, key) == history, (row["trial_id"], key)
        assert child_tags["rung.status"] == row["status"]
        assert child_tags["rung.stop_reason"] == {"stopped": "stopped_early", "completed": "completed"}[row["status"]]
        assert child["info"]["status"] == "FINISHED"
        assert child_tags.get("rung.best") == ("true" if row["trial_id"] == best["trial"] else None)


def test_an_unreachable_mlflow_neither_stops_nor_breaks_a_sweep(tmp_path: Path) -> None:
    # A port bound and never listened on, held for the whole test: connections are refused, and
    # no other process can take it meanwhile.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{refusing.getsockname()[1]}"
        spec = write_sweep(tmp_path, "offline", f'mlflow_uri = "{uri}"\nflush_timeout_s = 1')
        db = tmp_path / "rung.db"
        done = rung("run", str(spec), "--db", str(db), "-q")
    assert done.returncode == 0, done.stderr
    assert f"MLflow at {uri} is unreachable" in done.stderr, done.stderr
    assert "were not sent" in done.stderr and "rung's store has them all" in done.stderr, done.stderr
    # The sweep ran in full: every trial ended and reported.
    exported = json.loads(rung("export", "--db", str(db), "--format", "json").stdout)
    assert len(exported) == 6 and all(row["status"] in ("stopped", "completed") for row in exported)


def test_a_bad_mlflow_uri_is_refused_when_the_spec_is_read(tmp_path: Path) -> None:
    spec = write_sweep(tmp_path, "bad", 'mlflow_uri = "localhost:5000"')
    done = rung("run", str(spec), "--db", str(tmp_path / "rung.db"))
    assert done.returncode == 2, done.stderr
    assert 'setting "tracking.mlflow_uri": "localhost:5000" is not an http:// or https:// URL' in done.stderr
    assert "panicked" not in done.stderr

    spec = write_sweep(tmp_path / "env", "bad-env", 'experiment = "x"')
    done = rung("run", str(spec), "--db", str(tmp_path / "env.db"), env={"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})
    assert done.returncode == 2, done.stderr
    assert 'setting "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db" is not an http:// or https:// URL' in done.stderr
    assert "panicked" not in done.stderr
