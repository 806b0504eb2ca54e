"""A 1 GiB upload and download through one connection with the client's
memory flat: the peak RSS of this process during each transfer stays within
a bound far below the data's size. SA_PY_BIG_BYTES scales the size (the
sanitizer build uses 256 MiB)."""
from __future__ import annotations

import os
import random
import sys
import time
from typing import AsyncIterator

import pytest
from conftest import AgentProc

from sandbox_agent import AsyncAgent

SIZE = int(os.environ.get("SA_PY_BIG_BYTES", str(1 << 30)))
BLOCK = 1 << 20
BASE = random.Random(16).randbytes(BLOCK)
# What the client may hold: a few 4 MiB chunks in flight, the socket's
# buffers, the stream's read-ahead (8 MiB) and the allocator's slack.
RSS_BOUND = 96 << 20


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)
        return True
    except OSError:
        return False


async def _data(size: int) -> AsyncIterator[bytes]:
    """size bytes, every MiB different: a random MiB, rotated by its index."""
    for i in range(size // BLOCK):
        yield _block(i)


def _block(i: int) -> bytes:
    k = (i * 4099) % BLOCK
    return BASE[k:] + BASE[:k]


def _report(what: str, secs: float) -> None:
    sys.__stdout__.write(f"\n{what}: {SIZE / (1 << 20):.0f} MiB in {secs:.2f} s "
                         f"({SIZE / (1 << 20) / secs:.0f} MiB/s), peak RSS "
                         f"{_status('VmHWM') / (1 << 20):.0f} MiB\n")


async def test_upload_and_download_with_flat_memory(agent: AsyncAgent, agent_proc: AgentProc) -> None:
    if not _reset_peak():
        pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
    path = os.path.join(agent_proc.dir, "big.bin")
    try:
        base_rss = _status("VmRSS")
        t = time.perf_counter()
        w = await agent.write_file(path, _data(SIZE))
        _report("upload", time.perf_counter() - t)
        assert w.bytes_written == SIZE and w.entry is not None and w.entry.size == SIZE
        assert _status("VmHWM") - base_rss < RSS_BOUND

        assert _reset_peak()
        base_rss = _status("VmRSS")
        t = time.perf_counter()
        seen = []
        d = await agent.download(path, "/dev/null", progress=lambda done, total: seen.append(done))
        _report("download", time.perf_counter() - t)
        assert _status("VmHWM") - base_rss < RSS_BOUND
        # What came back is what went: the agent's CRC of the file matches
        # the one the client computed while sending, and the download's own
        # CRC (checked against the agent's as it arrived).
        assert d.size == SIZE and d.crc32 == w.crc32
        assert seen[-1] == SIZE
        last = SIZE // BLOCK - 1
        assert await agent.read_file(path, offset=last * BLOCK - 5, length=BLOCK) == \
            _block(last - 1)[-5:] + _block(last)[:-5]
    finally:
        if os.path.exists(path):
            os.unlink(path)
