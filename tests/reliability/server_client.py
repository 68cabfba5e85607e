"""Talking to a running ComfyUI server over HTTP and its websocket: queue, wait, read outputs, measure memory."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from server_harness import Server, saved_files

from devtools.proc_memory import resident_bytes

RUN_TIMEOUT_S = 300


def queue(server: Server, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": client_id or str(uuid.uuid4())})
    assert isinstance(body, dict), (status, body)
    return status, body


def run_ok(server: Server, prompt: dict) -> dict:
    status, body = queue(server, prompt)
    assert status == 200 and not body.get("node_errors"), f"{status} {body}"
    entry = server.wait_for_history(body["prompt_id"], RUN_TIMEOUT_S)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-4000:]
    return entry


def events(entry: dict) -> dict[str, dict]:
    return {name: data for name, data in entry["status"].get("messages", [])}


def output_file(server: Server, entry: dict, suffix: str) -> Path:
    files = [f for f in saved_files(entry) if f["filename"].endswith(suffix)]
    assert len(files) == 1, entry["outputs"]
    return server.output_dir / files[0].get("subfolder", "") / files[0]["filename"]


def rss_bytes(server: Server) -> int:
    return resident_bytes(server.proc.pid)


def vram_bytes(server: Server) -> int | None:
    """Memory torch holds allocated on the server's first GPU (None for a CPU server)."""
    status, stats = server.get("/system_stats")
    assert status == 200
    gpus = [d for d in stats.get("devices", []) if d.get("type") not in ("cpu", None)]
    if not gpus:
        return None
    return int(gpus[0]["torch_vram_total"]) - int(gpus[0]["torch_vram_free"])


async def run_and_interrupt(server: Server, prompt: dict, trigger, timeout: float) -> tuple[str, dict, bool]:
    """Queue ``prompt`` with a websocket open; POST /interrupt (for this prompt) once ``trigger(type, data)`` holds.

    Returns (final event type, its data, whether the interrupt was sent).
    """
    import aiohttp

    client_id = str(uuid.uuid4())
    ws_url = server.base.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    sent = False
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, heartbeat=30) as ws:
        async with session.post(server.base + "/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
            body = await resp.json()
            assert resp.status == 200 and not body.get("node_errors"), body
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                continue   # binary preview frames
            data = json.loads(msg.data)
            kind, payload = data.get("type"), data.get("data") or {}
            if payload.get("prompt_id") not in (None, prompt_id):
                continue
            if not sent and trigger(kind, payload):
                async with session.post(server.base + "/interrupt", json={"prompt_id": prompt_id}) as r:
                    assert r.status == 200
                sent = True
            if kind in ("execution_interrupted", "execution_success", "execution_error") and \
                    payload.get("prompt_id") == prompt_id:
                return kind, payload, sent
    pytest.fail(f"no end of prompt within {timeout:.0f} s; log:\n{server.log_tail()}")
