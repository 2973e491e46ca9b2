"""The log callback from Python (quiet by default; levels; a failing callback does not fail the load) and the load
options that replaced environment knobs (kv_block_tokens, cpu_kernels)."""
import os

import pytest

import dsinfer

MODEL = os.environ.get("DSINFER_TEST_MODEL", "build/models/v32-tiny")


@pytest.fixture(autouse=True)
def quiet_afterwards():
    yield
    dsinfer.set_log_callback(None)


def test_quiet_by_default_then_messages_at_or_above_the_level():
    seen = []
    dsinfer.Model.load(MODEL, n_threads=1)  # no callback: nothing to receive, nothing printed
    dsinfer.set_log_callback(lambda level, message: seen.append((level, message)), dsinfer.LogLevel.INFO)
    dsinfer.Model.load(MODEL, n_threads=1)
    assert seen, "a load logs at info level"
    assert all(isinstance(level, dsinfer.LogLevel) and level >= dsinfer.LogLevel.INFO for level, _ in seen)
    assert any(message.startswith("loaded ") and "layers" in message for _, message in seen)

    seen.clear()
    dsinfer.set_log_callback(lambda level, message: seen.append((level, message)), dsinfer.LogLevel.ERROR)
    dsinfer.Model.load(MODEL, n_threads=1)
    assert seen == []
    dsinfer.set_log_callback(None)
    dsinfer.Model.load(MODEL, n_threads=1)
    assert seen == []


def test_a_raising_callback_does_not_fail_the_load():
    unraisable = []

    def hook(info):
        unraisable.append(info.exc_value)

    def failing(level, message):
        raise RuntimeError("log sink broken")

    import sys
    old, sys.unraisablehook = sys.unraisablehook, hook
    try:
        dsinfer.set_log_callback(failing)
        model = dsinfer.Model.load(MODEL, n_threads=1)
    finally:
        sys.unraisablehook = old
    assert model.info["num_layers"] > 0
    assert unraisable and isinstance(unraisable[0], RuntimeError)


def test_set_log_callback_rejects_a_non_callable():
    with pytest.raises(TypeError):
        dsinfer.set_log_callback(42)


def test_load_options_kv_block_tokens_and_cpu_kernels():
    small = dsinfer.Model.load(MODEL, n_threads=1, kv_block_tokens=16)
    default = dsinfer.Model.load(MODEL, n_threads=1)
    assert small.kv_cache_bytes(1) * 4 == default.kv_cache_bytes(1)
    with pytest.raises(dsinfer.InvalidArgumentError, match="kv_block_tokens"):
        dsinfer.Model.load(MODEL, kv_block_tokens=70000)
    with pytest.raises(dsinfer.InvalidArgumentError, match="cpu_kernels"):
        dsinfer.Model.load(MODEL, cpu_kernels="sse9")


def test_load_options_backend_and_cuda():
    # The CUDA options are checked whatever the backend; the CPU backend ignores valid ones.
    dsinfer.Model.load(MODEL, n_threads=1, backend="cpu", cuda_device=1, cuda_small_m_max=0,
                       cuda_small_m_tensor_cores=False, cuda_cublaslt_fp8=False, cuda_mla_kernel="tensor-core",
                       cuda_indexer_kernel="tensor-core")
    with pytest.raises(dsinfer.InvalidArgumentError, match="cuda.mla_kernel must be cuda-core or tensor-core"):
        dsinfer.Model.load(MODEL, cuda_mla_kernel="tc")
    with pytest.raises(dsinfer.InvalidArgumentError, match="cuda.indexer_kernel"):
        dsinfer.Model.load(MODEL, cuda_indexer_kernel="mma")
    with pytest.raises(dsinfer.InvalidArgumentError, match="cuda.small_m_max"):
        dsinfer.Model.load(MODEL, cuda_small_m_max=4097)
    with pytest.raises(dsinfer.InvalidArgumentError, match="cuda.device"):
        dsinfer.Model.load(MODEL, cuda_device=-1)
    with pytest.raises(dsinfer.InvalidArgumentError, match="unknown backend"):
        dsinfer.Model.load(MODEL, backend="tpu")
