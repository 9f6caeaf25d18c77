"""keep_freed_cpu_memory: freed large blocks stay in the process for reuse (glibc)."""

import subprocess
import sys

import pytest


PROBE = """
import torch
from ssl_hf.training.memory import keep_freed_cpu_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

applied = {apply} and keep_freed_cpu_memory()
before = rss_mib()
block = torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's largest mmap threshold
grown = rss_mib() - before
del block
print(applied, grown, rss_mib() - before)
"""


def _run(apply: bool) -> tuple[bool, float, float]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(apply=apply)], capture_output=True, text=True, check=True)
    applied, grown, kept = out.stdout.split()
    return applied == "True", float(grown), float(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_blocks_are_kept_for_reuse_only_when_applied():
    applied, grown, kept = _run(apply=True)
    assert applied
    assert grown > 60
    assert kept > 60  # the 64 MiB stay resident for the next step instead of being unmapped
    applied, grown, kept = _run(apply=False)
    assert not applied
    assert grown > 60
    assert kept < 8  # glibc's default: the mmap'd block goes back to the OS when freed


def test_training_arguments_default_on_and_switchable():
    from ssl_hf.training import TrainingArguments

    assert TrainingArguments().cpu_keep_freed_memory
    assert not TrainingArguments(cpu_keep_freed_memory=False).cpu_keep_freed_memory
