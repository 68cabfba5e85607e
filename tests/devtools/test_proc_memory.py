"""``devtools.proc_memory``: the one reader of ``/proc`` memory figures the benches and the memory tests share."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devtools import proc_memory

MIB = 2**20


def _resident_block(mib: int) -> bytearray:
    block = bytearray(mib * MIB)
    block[::4096] = b"\1" * len(block[::4096])   # every page written, so every page is resident
    return block


def test_peak_after_a_reset_is_the_work_since_then_not_an_earlier_peak():
    earlier = _resident_block(300)
    del earlier
    before = proc_memory.reset_peak()
    assert proc_memory.peak_resident_bytes() - before < 50 * MIB     # the 300 MiB before the reset is forgotten
    block = _resident_block(120)
    grown = proc_memory.peak_resident_bytes() - before
    assert 120 * MIB <= grown < 170 * MIB, grown / MIB
    assert proc_memory.resident_bytes() - before >= 120 * MIB
    del block


def test_another_process_is_read_by_its_pid():
    holds_200_mib = "b = bytearray(200 * 2**20); b[::4096] = b'\\1' * (len(b) // 4096); print(flush=True); input()"
    child = subprocess.Popen([sys.executable, "-c", holds_200_mib], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        child.stdout.readline()     # the block is written
        assert proc_memory.resident_bytes(child.pid) >= 200 * MIB
        assert proc_memory.peak_resident_bytes(child.pid) >= proc_memory.resident_bytes(child.pid)
    finally:
        child.communicate(b"\n")


def test_a_missing_field_names_the_file_and_the_field(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t  100 kB\n")
    assert proc_memory._field_kib(status, "VmPeak") == 100
    with pytest.raises(RuntimeError, match=f"no VmRSS in {status}"):
        proc_memory._field_kib(status, "VmRSS")
