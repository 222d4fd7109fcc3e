"""The commands that build frames of every run configure polars' allocator themselves,
also when started by a process that had imported polars (which writes its own default into
the environment the child inherits); a configuration the user chose is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cliffwatch.cli.options import (
    POLARS_ALLOCATOR_CONF,
    POLARS_OWN_ALLOCATOR_CONFS,
    return_freed_memory,
)

_VAR = "_RJEM_MALLOC_CONF"


def _run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("thp", [False, True])
def test_the_installed_polars_writes_one_of_the_confs_we_know_as_its_own(thp: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (_VAR, "POLARS_THP")}
    if thp:
        env["POLARS_THP"] = "1"
    written = _run("import os, polars; print(os.environ['_RJEM_MALLOC_CONF'])", env)
    assert written in POLARS_OWN_ALLOCATOR_CONFS


@pytest.mark.slow
def test_a_command_started_by_a_process_that_imported_polars_sets_its_own_conf() -> None:
    env = {k: v for k, v in os.environ.items() if k != _VAR}
    child = ("from cliffwatch.cli.options import return_freed_memory; import os; "
             "return_freed_memory(); print(os.environ['_RJEM_MALLOC_CONF'])")
    parent = ("import subprocess, sys, polars; "
              f"subprocess.run([sys.executable, '-c', {child!r}], check=True)")
    assert _run(parent, env) == POLARS_ALLOCATOR_CONF


@pytest.mark.parametrize("given", [None, "narenas:2", "dirty_decay_ms:500"])
def test_a_conf_the_user_set_is_kept_and_none_is_filled(
    given: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if given is None:
        monkeypatch.delenv(_VAR, raising=False)
    else:
        monkeypatch.setenv(_VAR, given)
    return_freed_memory()
    assert os.environ[_VAR] == (given or POLARS_ALLOCATOR_CONF)
