"""Acceptance of issue 8: cliffwatch as a library inside someone else's app.

The wheel is built from this checkout and installed, with its dependencies, into a fresh
virtual environment (no system site-packages, no PYTHONPATH). Beside it lives an app with
its OWN packages named ``telemetry``, ``analytics``, ``orchestrator`` and ``dashboard``
(common names: before issue 8 cliffwatch installed top-level packages of those names, and
an app like this one could not import the guard). From another working directory, which
holds decoy ``data/workload.toml`` and ``data/prices.json`` files that cliffwatch must not
read, the test runs:

- the guard example (``from cliffwatch import cliffwatch_guard``): a plan over the cap
  raises ``CostCliffError``, a plan within it records its calls; both runs are in the store;
- the litellm callback (``from cliffwatch import CliffwatchLogger``) on a
  ``litellm.completion(mock_response=...)`` (no network): the call is in the store;
- the installed console script: ``cliffwatch demo --runs 20`` (the workload is read from
  the wheel) and ``cliffwatch percentiles --format json``, checked against numpy over the
  run costs read from the store with DuckDB.

Every subprocess has a budget far above what it needs on an idle 2-core machine (about
3 s to build, 100 s to install, 15 s for the demo), so the test passes on one loaded 5x;
nothing waits a fixed time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("orchestrator", "telemetry", "analytics", "dashboard")
BUILD_BUDGET_S = 600.0
INSTALL_BUDGET_S = 1800.0
RUN_BUDGET_S = 600.0
APP_WAIT_S = 120.0  # the app's bounded wait for litellm's callback threads


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at this checkout or its venv,
    no cliffwatch setting (so no price overrides), litellm offline."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not key.startswith("CLIFFWATCH_")
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(args: list[str | Path], *, cwd: Path, budget_s: float,
         env: dict[str, str] | None = None) -> str:
    """Run a command to completion within ``budget_s`` (``env`` added to a user's shell's);
    its stdout, or a failure with both streams."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**_clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=budget_s,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "--wheel-dir", out, ROOT],
        cwd=out,
        budget_s=BUILD_BUDGET_S,
    )
    (built,) = out.glob("cliffwatch-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """A fresh virtual environment with the wheel and its dependencies (pip's cache and
    configured indexes are used as a user's pip would); removed afterwards (about 1 GB)."""
    home = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", home], cwd=home.parent, budget_s=RUN_BUDGET_S)
    cfg = (home / "pyvenv.cfg").read_text(encoding="utf-8")
    assert "include-system-site-packages = false" in cfg
    _run(
        [home / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
         "-q", wheel],
        cwd=home.parent,
        budget_s=INSTALL_BUDGET_S,
    )
    yield home
    shutil.rmtree(home, ignore_errors=True)


APP_PACKAGES = {
    "telemetry/__init__.py": '"""The app\'s own telemetry."""\nOWNER = "app"\n',
    # The module cliffwatch's dispatch failed on when it imported bare `telemetry...`.
    "telemetry/conventions.py": '"""The app\'s span names."""\nROLE = "app-role"\n',
    "analytics/__init__.py": '"""The app\'s own analytics."""\nOWNER = "app"\n',
    "orchestrator/__init__.py": '"""The app\'s own orchestrator."""\nOWNER = "app"\n',
    "orchestrator/guard.py": (
        '"""The app\'s own guard module."""\n\n\ndef cliffwatch_guard(*args, **kwargs):\n'
        '    raise RuntimeError("the app\'s orchestrator.guard, not cliffwatch\'s")\n'
    ),
    "dashboard/__init__.py": '"""The app\'s own dashboard."""\nOWNER = "app"\n',
}

APP_MAIN = '''
"""An app with its own telemetry, analytics, orchestrator and dashboard packages that
embeds cliffwatch. Usage: main.py guard|litellm STORE WAIT_S; prints one JSON line."""

import json
import sys
import time
from pathlib import Path

import analytics
import dashboard
import orchestrator
import orchestrator.guard
import telemetry
import telemetry.conventions

import cliffwatch
from cliffwatch import CliffwatchLogger, CostCliffError, cliffwatch_guard


def guard_example(db, wait_s):
    try:
        with cliffwatch_guard("research", max_workers=3, ceiling_usd=0.50, db=db) as guard:
            for subtask in guard.check_plan([f"check source {i}" for i in range(5)]):
                raise AssertionError(f"a plan over the cap dispatched {subtask}")
    except CostCliffError as exc:
        rejected = {"run_id": guard.run_id, "proposed": exc.proposed,
                    "max_workers": exc.max_workers}
    else:
        raise AssertionError("a plan over the cap raised no CostCliffError")
    with cliffwatch_guard("research", max_workers=3, ceiling_usd=0.50, db=db) as guard:
        for subtask in guard.check_plan(["summarise source A", "summarise source B"]):
            guard.check_spend()
            guard.record_call("gpt-4o-mini", 1000, 200)
    import litellm

    price = litellm.model_cost["gpt-4o-mini"]
    return {
        "rejected": rejected,
        "ok": {"run_id": guard.run_id, "status": str(guard.status),
               "spent_usd": guard.spent_usd},
        "price": [price["input_cost_per_token"], price["output_cost_per_token"]],
    }


def litellm_callback(db, wait_s):
    import litellm

    logger = CliffwatchLogger(db, linger_s=0.05)
    litellm.callbacks = [logger]
    reply = litellm.completion(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Summarise ticket 7"}],
        mock_response="Ticket 7: refund issued.",
        metadata={"cliff_task_class": "support", "cliff_run_id": "ticket-7",
                  "cliff_role": "worker"},
    )
    # litellm runs success callbacks on its own threads after the call returns.
    deadline = time.monotonic() + wait_s
    while logger.calls_recorded < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    recorded = logger.calls_recorded
    logger.end_run("ticket-7")
    flushed = logger.flush(wait_s)
    logger.close()
    return {
        "calls_recorded": recorded,
        "flushed": flushed,
        "tokens": [reply.usage.prompt_tokens, reply.usage.completion_tokens],
        "response_cost": reply._hidden_params["response_cost"],
    }


def main():
    mode, db, wait_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    out = {"guard": guard_example, "litellm": litellm_callback}[mode](db, wait_s)
    here = Path(__file__).resolve().parent
    own = [telemetry, telemetry.conventions, analytics, orchestrator, orchestrator.guard,
           dashboard]
    out["app_modules"] = {m.__name__: str(Path(m.__file__).resolve()) for m in own}
    out["app_dir"] = str(here)
    out["cliffwatch_modules"] = {
        name: str(Path(module.__file__).resolve())
        for name, module in sorted(sys.modules.items())
        if name.startswith("cliffwatch.") and getattr(module, "__file__", None)
    }
    out["prefix"] = sys.prefix
    print(json.dumps(out))


if __name__ == "__main__":
    main()
'''


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's folder: main.py and its own four packages of cliffwatch's layer names."""
    folder = tmp_path_factory.mktemp("app")
    for name, text in APP_PACKAGES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "main.py").write_text(textwrap.dedent(APP_MAIN).lstrip(), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory: neither the repo nor the app, with decoys in ./data/ that
    cliffwatch must not read (the workload ships in the wheel; price overrides come only
    from CLIFFWATCH_PRICE_OVERRIDES)."""
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "data").mkdir()
    (folder / "data" / "workload.toml").write_text("this is [not a workload\n")
    decoy = {"gpt-4o-mini": {"input_cost_per_token": 1.0, "output_cost_per_token": 1.0}}
    (folder / "data" / "prices.json").write_text(json.dumps(decoy))
    return folder


def _run_app(venv: Path, app: Path, elsewhere: Path, mode: str, db: Path,
             env: dict[str, str] | None = None) -> dict:
    out = _run(
        [venv / "bin" / "python", app / "main.py", mode, db, APP_WAIT_S],
        cwd=elsewhere,
        budget_s=RUN_BUDGET_S,
        env=env,
    )
    result = json.loads(out.strip().splitlines()[-1])
    # The app's packages are the app's; every cliffwatch module came from the wheel.
    for name, path in result["app_modules"].items():
        assert Path(path).is_relative_to(app.resolve()), f"{name} is not the app's: {path}"
    site = Path(result["prefix"]).resolve()
    assert site == venv.resolve()
    assert "cliffwatch.orchestrator.guard" in result["cliffwatch_modules"]
    for name, path in result["cliffwatch_modules"].items():
        assert Path(path).is_relative_to(site), f"{name} not from the installed wheel: {path}"
        assert "site-packages" in Path(path).parts
    return result


def _rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_the_wheel_is_one_package_with_its_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        entry_points = zf.read(
            next(i.filename for i in infos if i.filename.endswith("entry_points.txt"))
        ).decode()
    names = {i.filename for i in infos}
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"cliffwatch", wheel.name.split("-py")[0] + ".dist-info"}
    assert not set(LAYERS) & tops  # no top-level orchestrator/telemetry/... packages
    assert not [n for n in names if ".duckdb" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert not [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
    assert "cliffwatch = cliffwatch.cli:main" in entry_points
    # hatchling followed the links: every file of each layer and of data/ is in it
    expected = {
        f"cliffwatch/{path.relative_to(ROOT).as_posix()}"
        for folder in (*LAYERS, "data")
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and ".duckdb" not in path.name
        and path.suffix != ".pyc"
    }
    assert "cliffwatch/data/workload.toml" in expected
    assert {n for n in expected if n.startswith("cliffwatch/data/inputs/")}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_guard_example_in_an_app_with_its_own_layer_packages(
    venv: Path, app: Path, elsewhere: Path, writer: str
) -> None:
    # process: the exporter's writer process imports the installed cliffwatch, not the
    # app's packages of the same layer names (it takes the app's sys.path)
    db = elsewhere / f"guard-{writer}.duckdb"
    result = _run_app(venv, app, elsewhere, "guard", db,
                      env={"CLIFFWATCH_EXPORT_WRITER": writer})
    assert result["rejected"]["proposed"] == 5 and result["rejected"]["max_workers"] == 3
    input_usd, output_usd = result["price"]
    assert input_usd < 0.01 and output_usd < 0.01  # litellm's price, not the decoy's $1
    expected_usd = 2 * (1000 * input_usd + 200 * output_usd)
    assert result["ok"]["spent_usd"] == pytest.approx(expected_usd, rel=1e-9)
    runs = _rows(
        db,
        "SELECT run_id, task_class, status, breach, workers_proposed, workers_dispatched, "
        "llm_calls, cost_usd, max_workers FROM runs ORDER BY status",
    )
    assert runs == [
        (result["ok"]["run_id"], "research", "ok", None, 2, 2, 2,
         pytest.approx(expected_usd, rel=1e-9), 3),
        (result["rejected"]["run_id"], "research", "rejected", "cap", 5, 0, 0, 0.0, 3),
    ]
    kinds = _rows(db, "SELECT kind, run_id FROM incidents")
    assert kinds == [("cap_breach", result["rejected"]["run_id"])]


def test_litellm_callback_in_an_app_with_its_own_layer_packages(
    venv: Path, app: Path, elsewhere: Path
) -> None:
    db = elsewhere / "litellm.duckdb"
    result = _run_app(venv, app, elsewhere, "litellm", db)
    assert result["calls_recorded"] == 1 and result["flushed"] is True
    input_tokens, output_tokens = result["tokens"]
    runs = _rows(
        db,
        "SELECT task_class, status, llm_calls, input_tokens, output_tokens, cost_usd, source "
        "FROM runs",
    )
    assert runs == [
        ("support", "ok", 1, input_tokens, output_tokens,
         pytest.approx(result["response_cost"], rel=1e-9), "litellm")
    ]
    assert result["response_cost"] > 0
    calls = _rows(db, "SELECT role, request_model FROM spans WHERE is_llm_call")
    assert calls == [("worker", "gpt-4o-mini")]


def test_installed_cli_demo_and_percentiles(venv: Path, elsewhere: Path) -> None:
    db = elsewhere / "demo.duckdb"
    cli = venv / "bin" / "cliffwatch"
    _run([cli, "demo", "--runs", "20", "--db", db], cwd=elsewhere, budget_s=RUN_BUDGET_S)
    out = _run([cli, "percentiles", "--db", db, "--format", "json"], cwd=elsewhere,
               budget_s=RUN_BUDGET_S)
    rows = {row["task_class"]: row for row in json.loads(out)}
    assert sum(row["runs"] for row in rows.values()) == 20
    costs: dict[str, list[float]] = {}
    for task_class, cost_usd in _rows(db, "SELECT task_class, cost_usd FROM runs"):
        costs.setdefault(task_class, []).append(cost_usd)
    assert set(rows) == set(costs) and len(costs) > 1
    for task_class, values in costs.items():
        row = rows[task_class]
        assert row["runs"] == len(values)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])  # linear, as quantile_cont
        assert (row["p50_usd"], row["p95_usd"], row["p99_usd"]) == (
            pytest.approx(p50, rel=1e-9),
            pytest.approx(p95, rel=1e-9),
            pytest.approx(p99, rel=1e-9),
        )
        assert row["max_usd"] == pytest.approx(max(values), rel=1e-9)
        assert 0 < row["max_usd"] < 1.0  # priced from litellm's map, not the decoy's $1/token
