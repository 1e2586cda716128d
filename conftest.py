"""Root pytest set-up, shared by tests/ and the notebooks nbval executes (solutions/, course/).

Notebook kernels inherit this process's environment, so setting the variables here runs every
notebook on the `smoke` profile, offline, with a private cache that never touches ~/.cache.
"""
import os
import tempfile

os.environ.setdefault("MINIMOPD_PROFILE", "smoke")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Smoke models are tiny: one thread per process is as fast, and it cannot oversubscribe the
# cores when a notebook kernel and the pytest process are both alive.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MINIMOPD_CACHE", tempfile.mkdtemp(prefix="minimopd-test-cache-"))
