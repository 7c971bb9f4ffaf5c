"""glibc's thresholds, set by programs (statemachine_server.core.allocator).

Each case runs in a fresh interpreter: the settings are process-wide and once set
cannot be read back, so what is checked is their effect: where ``malloc`` puts a
2 MiB block (a mapping of its own by default, the heap once tuned).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc only",
)

PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from statemachine_server.core.allocator import tune_malloc
    outcome = tune_malloc() if sys.argv[1] == "tune" else "untouched"
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    address = libc.malloc(2 << 20)
    heap = [
        [int(x, 16) for x in line.split()[0].split("-")]
        for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")
    ]
    print(outcome)
    print(any(low <= address < high for low, high in heap))
    """
)


def probe(mode: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**environ, **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


def test_a_large_block_is_mapped_on_its_own_by_default() -> None:
    assert probe("leave") == ["untouched", "False"]


def test_tuned_a_large_block_comes_from_the_heap() -> None:
    outcome, in_heap = probe("tune")
    assert outcome == "mmap threshold 4 MiB, trim threshold 32 MiB"
    assert in_heap == "True"


@pytest.mark.parametrize(
    "env",
    [{"MALLOC_MMAP_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}],
)
def test_the_environment_s_own_settings_win(env: dict[str, str]) -> None:
    outcome, in_heap = probe("tune", **env)
    assert outcome == "left as the environment sets it"
    assert in_heap == "False"
