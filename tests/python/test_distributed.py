"""Distributed runs from Python (issue 22): the keyword arguments' validation in every build; in a build without MPI
(the default wheel) every distributed call raises UnsupportedError naming MPI; with MPI and mpirun on PATH, a two-rank
run (distributed_greedy.py) gives the tokens of one process. Needs the package installed and DSINFER_TEST_MODEL, as
test_dsinfer.py."""
import functools
import math
import os
import shutil
import subprocess
import sys

import pytest

import dsinfer

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")
# MPI refuses root without these (CI runs as root); --oversubscribe: more ranks than cores.
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")


@functools.lru_cache(maxsize=None)
def module_has_mpi():
    """Whether the installed module was built with MPI: asked in a child process (where it is, the question starts
    MPI, which this process should not), under mpirun when there is one."""
    probe = ("import dsinfer\n"
             "try:\n"
             "    dsinfer.distributed_rank()\n"
             "except dsinfer.UnsupportedError:\n"
             "    print('no MPI')\n")
    launcher = ["mpirun", "-np", "1"] if shutil.which("mpirun") else []
    out = subprocess.run(launcher + [sys.executable, "-c", probe], env=MPI_ENV, capture_output=True, text=True,
                         timeout=120)
    return "no MPI" not in out.stdout


without_mpi = pytest.mark.skipif("module_has_mpi()", reason="the installed dsinfer was built with MPI")


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf, 2e6])
@pytest.mark.parametrize("distributed", [False, True])
def test_a_timeout_out_of_range_is_refused_in_every_build(timeout, distributed):
    # Before MPI is asked anything, whatever `distributed` says.
    with pytest.raises(dsinfer.InvalidArgumentError, match="distributed_timeout_s"):
        dsinfer.Model.load(MODEL, n_threads=1, distributed=distributed, distributed_timeout_s=timeout)
    with pytest.raises(dsinfer.InvalidArgumentError, match="distributed_timeout_s"):
        dsinfer.run_worker(MODEL, n_threads=1, distributed=distributed, distributed_timeout_s=timeout)


def test_keyword_types_are_checked():
    with pytest.raises(TypeError):
        dsinfer.Model.load(MODEL, distributed="yes")
    with pytest.raises(TypeError):
        dsinfer.Model.load(MODEL, distributed_timeout_s="soon")
    with pytest.raises(TypeError):
        dsinfer.run_worker(MODEL, distributed=[1])


def test_run_worker_is_for_distributed_runs_only():
    with pytest.raises(dsinfer.InvalidArgumentError, match="distributed"):
        dsinfer.run_worker(MODEL, n_threads=1)


def test_a_model_of_one_process_is_one_rank_holding_every_weight():
    model = dsinfer.Model.load(MODEL, n_threads=1, distributed_timeout_s=1e6)  # the limit is valid
    info = model.info
    assert info["distributed_ranks"] == 1
    assert len(info["rank_weight_bytes"]) == 1 and info["rank_weight_bytes"][0] > 0
    assert info["attention_split_by_heads"] is False


@without_mpi
def test_without_mpi_every_distributed_call_names_mpi():
    for call in (lambda: dsinfer.Model.load(MODEL, n_threads=1, distributed=True),
                 lambda: dsinfer.run_worker(MODEL, n_threads=1, distributed=True),
                 dsinfer.distributed_rank):
        with pytest.raises(dsinfer.UnsupportedError, match="MPI") as e:
            call()
        assert e.value.code == 4


@pytest.mark.skipif("shutil.which('mpirun') is None or not module_has_mpi()",
                    reason="needs a dsinfer built with MPI and mpirun")
def test_two_ranks_generate_what_one_process_does():
    script = os.path.join(os.path.dirname(__file__), "distributed_greedy.py")
    out = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", sys.executable, script, MODEL], env=MPI_ENV,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rank 0: distributed Python OK" in out.stdout, out.stdout + out.stderr
    assert "rank 1: served" in out.stdout, out.stdout + out.stderr
