"""twins-serve against a real Triton Inference Server (PyTriton's bundled tritonserver).

The server runs as a subprocess, exactly as a user starts it; requests go through
tritonclient over HTTP and gRPC; the served logits are judged against the PyTorch FP32
model with the validation thresholds; shutdown must leave no process, workspace or
shared-memory region behind. Needs the serving environment (numpy<2, nvidia-pytriton):
``make test`` runs this file in .venv-serve; elsewhere it skips.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs the serving environment (make test runs this file in .venv-serve)")
if int(np.__version__.split(".")[0]) >= 2:
    pytest.skip("needs numpy<2 (the serving environment: make test runs this file in .venv-serve)",
                allow_module_level=True)
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from twins_deploy.cli.serve import main as serve_main  # noqa: E402
from twins_deploy.engines.validation import Thresholds, ValidationReport, compare_outputs, judge, random_batch  # noqa: E402
from twins_deploy.errors import BackendUnavailableError  # noqa: E402
from twins_deploy.manifest import read_manifest  # noqa: E402
from twins_deploy.pipeline import build_model, weights_for_manifest  # noqa: E402
from twins_deploy.serving import server as srv  # noqa: E402

MODEL = "svt_s_fp32"
START_TIMEOUT_S = 300  # a failure deadline on a loaded machine, not a measurement


def free_ports(n: int = 3) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    """``twins-serve ARGS`` in a subprocess, as a user runs it; ``ready`` when it says so."""

    def __init__(self, tmp: Path, *args: str, ignore_sigint: bool = False) -> None:
        self.http, self.grpc, self.metrics = free_ports()
        self.out, self.err = tmp / "serve.out", tmp / "serve.err"
        cmd = [sys.executable, "-m", "twins_deploy.cli.serve", *args, "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--workspace", str(tmp)]
        # a job started with `&` by a non-interactive shell inherits SIGINT ignored
        preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=preexec)
        self.workspace_root = tmp
        deadline = time.monotonic() + START_TIMEOUT_S
        while "ready (pid" not in self.out.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"twins-serve did not become ready (exit {self.proc.poll()}):\n{self.err.read_text()[-3000:]}")
            time.sleep(0.3)
        self.children = srv.server_processes(self.proc.pid)

    def http_client(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(f"127.0.0.1:{self.http}")

    def grpc_client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc}")

    def metric(self, name: str) -> float:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=30).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and f'model="{MODEL}"' in line)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=START_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def assert_nothing_left(server: Server) -> None:
    assert server.children, "the server had tritonserver and stub processes while it ran"
    alive = [p for p in server.children if srv._alive(p)]
    assert not alive, f"processes left running: {alive}"
    assert not list(Path("/dev/shm").glob(f"{srv.SHM_PREFIX}{server.proc.pid}-*"))
    assert not list(server.workspace_root.glob("twins-serve-*")), "workspace left behind"


@pytest.fixture(scope="module")
def server(svt_s_triton_repo):
    import shutil
    import tempfile

    _, repo = svt_s_triton_repo
    tmp = Path(tempfile.mkdtemp(prefix="tw-"))  # short: PyTriton's Unix socket paths live under it
    s = Server(tmp, str(repo))
    yield s
    if s.proc.poll() is None:
        s.stop(signal.SIGTERM)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(svt_s_triton_repo):
    """The PyTorch FP32 model with the artifact's weights, and the manifest."""
    _, repo = svt_s_triton_repo
    manifest = read_manifest(repo / MODEL / "1" / "model.onnx")
    model = build_model(manifest.spec.model, weights_for_manifest(manifest, None, False), manifest.spec.features)
    return model.eval(), manifest


def judged(reference, x: np.ndarray, got: np.ndarray) -> ValidationReport:
    import torch

    model, manifest = reference
    model.set_attention_impl("explicit")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    report = ValidationReport("torch-fp32-cpu", "triton", "fp32", Thresholds.for_precision("fp32"))
    report.stats.append(compare_outputs(f"b={len(x)}", "logits", ref, got))
    judge(report)
    return report


def test_ready_lines_say_what_is_served(server):
    text = server.out.read_text()
    assert f"serving {MODEL} (onnx, max batch 4, dynamic batching preferred [2, 4], queue delay 100 us, 1 CPU instance)" in text
    assert f"HTTP http://127.0.0.1:{server.http}  gRPC 127.0.0.1:{server.grpc}" in text
    assert "Failed to initialize NVML" not in text  # the server's console noise stays in its log


def test_http_and_grpc_answer_with_validated_logits(server, reference):
    _, manifest = reference
    x = random_batch(3, manifest.spec.img_size, manifest.preprocess, seed=5)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got_http = server.http_client().infer(MODEL, [inp]).as_numpy("logits")
    ginp = grpcclient.InferInput("input", list(x.shape), "FP32")
    ginp.set_data_from_numpy(x)
    got_grpc = server.grpc_client().infer(MODEL, [ginp]).as_numpy("logits")
    assert got_http.shape == got_grpc.shape == (3, 1000) and got_http.dtype == np.float32
    for got in (got_http, got_grpc):
        report = judged(reference, x, got)
        assert report.passed, report.failures
        assert report.stats[0].max_abs < 1e-4 and report.top1_agreement() == 1.0


def test_served_config_is_the_repositorys(server):
    cfg = server.http_client().get_model_config(MODEL)
    assert cfg["max_batch_size"] == 4
    assert cfg["input"][0]["name"] == "input" and cfg["input"][0]["dims"] == [3, 224, 224]
    assert cfg["output"][0]["name"] == "logits" and cfg["output"][0]["dims"] == [1000]
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [2, 4]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 100


def test_bad_requests_get_clear_errors_and_the_server_stays_up(server, reference):
    client = server.http_client()

    def infer(x: np.ndarray, dtype: str = "FP32", name: str = "input") -> np.ndarray:
        inp = httpclient.InferInput(name, list(x.shape), dtype)
        inp.set_data_from_numpy(x)
        return client.infer(MODEL, [inp]).as_numpy("logits")

    with pytest.raises(InferenceServerException, match=r"unexpected shape for input 'input'.*\[-1,3,224,224\]"):
        infer(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(InferenceServerException, match=r"batch.size must be <= 4"):
        infer(np.zeros((5, 3, 224, 224), np.float32))
    with pytest.raises(InferenceServerException, match=r"(?i)data.type|datatype|FP64"):
        infer(np.zeros((1, 3, 224, 224), np.float64), "FP64")
    with pytest.raises(InferenceServerException, match=r"(?i)unexpected inference input 'image'"):
        infer(np.zeros((1, 3, 224, 224), np.float32), name="image")
    assert server.proc.poll() is None and client.is_server_live() and client.is_model_ready(MODEL)
    _, manifest = reference
    x = random_batch(1, manifest.spec.img_size, manifest.preprocess, seed=6)
    assert judged(reference, x, infer(x)).passed


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, reference):
    _, manifest = reference
    xs = [random_batch(1, manifest.spec.img_size, manifest.preprocess, seed=100 + i) for i in range(24)]
    client = server.grpc_client()

    def one(x: np.ndarray) -> np.ndarray:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(MODEL, [inp]).as_numpy("logits")

    alone = [one(x) for x in xs[:2]]
    count0, exec0 = server.metric("nv_inference_count"), server.metric("nv_inference_exec_count")
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(8)

    def worker(k: int) -> None:
        start.wait()
        for i in range(k, len(xs), 8):
            results[i] = one(xs[i])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(24))
    for i in range(2):  # the same request, batched with others or alone, gets the same logits
        np.testing.assert_allclose(results[i], alone[i], rtol=0, atol=1e-4)
    assert judged(reference, np.concatenate(xs), np.concatenate([results[i] for i in range(24)])).passed
    inferences = server.metric("nv_inference_count") - count0
    executions = server.metric("nv_inference_exec_count") - exec0
    assert inferences == 24
    assert executions < inferences, "8 concurrent clients never shared an execution: dynamic batching is off"


def test_sigterm_stops_everything(server):
    assert server.children and all(srv._alive(p) for p in server.children)
    cmds = [Path(f"/proc/{p}/cmdline").read_bytes() for p in server.children]
    assert any(b"tritonserver" in c for c in cmds) and any(b"triton_python_backend_stub" in c for c in cmds)
    assert server.stop(signal.SIGTERM) == 0
    assert "stopped (SIGTERM); nothing left running" in server.err.read_text()
    assert_nothing_left(server)


@pytest.fixture
def short_tmp():
    """A workspace parent short enough for Unix socket paths (pytest's tmp_path can be too long)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="tw-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_background_server_stops_on_sigint_and_serves_batch_1(svt_s_triton_repo, short_tmp):
    """Started as `twins-serve ... &` (SIGINT ignored), with --max-batch 1 --instances 2:
    the batch-1 serving the load test compares dynamic batching with."""
    _, repo = svt_s_triton_repo
    s = Server(short_tmp, str(repo / MODEL), "--max-batch", "1", "--instances", "2", ignore_sigint=True)
    try:
        assert "max batch 1, no dynamic batching, 2 CPU instances" in s.out.read_text()
        cfg = s.http_client().get_model_config(MODEL)
        assert cfg["max_batch_size"] == 1 and "dynamic_batching" not in cfg
        assert sum(g["count"] for g in cfg["instance_group"]) == 2
        x = np.zeros((1, 3, 224, 224), np.float32)
        inp = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
        inp.set_data_from_numpy(x)
        assert s.http_client().infer(MODEL, [inp]).as_numpy("logits").shape == (1, 1000)
        with pytest.raises(InferenceServerException, match=r"batch.size must be <= 1"):
            inp2 = httpclient.InferInput("input", [2, 3, 224, 224], "FP32")
            inp2.set_data_from_numpy(np.zeros((2, 3, 224, 224), np.float32))
            s.http_client().infer(MODEL, [inp2])
        assert s.stop(signal.SIGINT) == 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
    assert "stopped (SIGINT)" in s.err.read_text()
    assert_nothing_left(s)


# -- refused before a server starts -------------------------------------------------------------------
def test_numpy_2_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(srv.np, "__version__", "2.1.0")
    with pytest.raises(BackendUnavailableError, match=r"empty outputs with numpy 2.1.0.*numpy<2.*twins-deploy\[serve\]"):
        srv.check_environment()


def test_the_stub_gets_this_interpreters_libpython_first(monkeypatch):
    libdir = srv.python_lib_dir()
    if libdir is None:
        pytest.skip("this interpreter has no shared libpython (the stub then uses the system's)")
    assert Path(libdir, f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so").exists() or any(
        Path(libdir).glob("libpython*.so*"))
    assert srv.stub_library_path(None) == libdir
    assert srv.stub_library_path(f"/opt/x{os.pathsep}{libdir}") == f"{libdir}{os.pathsep}/opt/x"


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/repo"], "is neither an artifact, a Triton model repository, nor an entry"),
    (["{repo}", "--max-batch", "8"], "exceeds svt_s_fp32's max_batch_size 4"),
    (["{repo}", "{repo}/svt_s_fp32"], "two models would be served as svt_s_fp32"),
    (["{repo}", "--http-port", "{busy}"], "choose another --http-port"),
    (["{repo}", "--http-port", "9000", "--grpc-port", "9000"], "three different ports"),
    (["{repo}", "--workspace", "/tmp/" + "w" * 80], "pass a shorter --workspace"),
])
def test_bad_input_is_one_error_line_and_no_server(svt_s_triton_repo, capsys, args, message):
    _, repo = svt_s_triton_repo
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        argv = [a.format(repo=repo, busy=busy.getsockname()[1]) for a in args]
        code = serve_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and message in err[-1], err
    assert not srv.server_processes(os.getpid())
