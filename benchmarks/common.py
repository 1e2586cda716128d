"""What the benchmark scripts share: the machine line, the load average, peak-memory watching,
and appending a table to a results file."""
from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from pathlib import Path

import torch
import transformers


def machine(device: torch.device | str = "cpu", *, extra: str = "") -> str:
    """CPU model, core count, library versions and GPU, in one line."""
    device = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, transformers "
            f"{transformers.__version__}{extra}, Python {platform.python_version()}, GPU: {gpu}")


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def rss_bytes() -> int:
    """Resident set size of this process (Linux), 0 where /proc does not exist."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@contextlib.contextmanager
def peak_memory(device: torch.device | str = "cpu"):
    """Yields a dict that, after the block, holds `rss_mb` (how far the resident set size rose
    above its value at entry, sampled every 5 ms) and, on CUDA, `vram_mb` (peak
    allocated GPU memory above the entry value)."""
    device = torch.device(device)
    out = {"rss_mb": float("nan"), "vram_mb": float("nan")}
    base, peak, running = rss_bytes(), [0], [True]

    def watch():
        while running[0]:
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)
    watcher = threading.Thread(target=watch, daemon=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        vram_base = torch.cuda.memory_allocated(device)
    watcher.start()
    try:
        yield out
    finally:
        running[0] = False
        watcher.join()
        out["rss_mb"] = max(peak[0] - base, 0) / 2**20
        if device.type == "cuda":
            out["vram_mb"] = (torch.cuda.max_memory_allocated(device) - vram_base) / 2**20


def append(path: str | None, table: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write("\n" + table)
