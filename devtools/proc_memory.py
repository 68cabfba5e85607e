"""A process's memory as Linux reports it in ``/proc``: resident size, its peak, resetting the peak, and the
memory the system has available; and the malloc setting under which resident size follows what a process holds. Used
by the benches and the test suite (never by the pack at run time).
"""

from __future__ import annotations

from pathlib import Path

Pid = int | str    # a process id, or "self"

#: The environment of a process whose resident size should follow what it holds: glibc's malloc with a fixed mmap
#: threshold, so every block over 128 KiB is mapped on its own and unmapped when freed. By default glibc raises the
#: threshold as large blocks are freed and then keeps freed memory in its heap: Save Video alone on 100 and on 1000
#: latent frames (1 MB apart in data) began decoding 114 MB apart in resident size, 1.1 MB apart with it fixed.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _field_kib(path: Path, field: str) -> int:
    """The ``field: N kB`` line of a ``/proc`` file, in KiB."""
    prefix = field + ":"
    for line in path.read_text().splitlines():
        if line.startswith(prefix):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {path} (not Linux?)")


def resident_bytes(pid: Pid = "self") -> int:
    """The process's resident size now (``VmRSS``)."""
    return _field_kib(Path(f"/proc/{pid}/status"), "VmRSS") * 1024


def peak_resident_bytes(pid: Pid = "self") -> int:
    """The process's peak resident size (``VmHWM``) since it started or since the last :func:`reset_peak`."""
    return _field_kib(Path(f"/proc/{pid}/status"), "VmHWM") * 1024


def reset_peak(pid: Pid = "self") -> int:
    """Start a new peak at the current resident size (Linux >= 4.0; the process must be ours); returns that size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return resident_bytes(pid)


def available_bytes() -> int:
    """Memory the system can give to new work without swapping (``MemAvailable``)."""
    return _field_kib(Path("/proc/meminfo"), "MemAvailable") * 1024
