"""The process-tree walk behind the managed identity endpoint's process binding (Linux)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from keyless.host import peer

pytestmark = pytest.mark.skipif(not peer.supported(), reason="process binding needs Linux /proc")

# A child that starts a grandchild, prints both pids, and waits to be killed.
TREE = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(grandchild.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        yield child.pid, grandchild
    finally:
        subprocess.run(["pkill", "-P", str(child.pid)], check=False)
        child.kill()
        child.wait(timeout=10)


@pytest.mark.parametrize("children_lists", [True, False], ids=["kernel-lists", "ppid-scan"])
def test_the_walk_finds_the_whole_tree_the_app_first(
    tree: tuple[int, int], children_lists: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the kernel's children lists (the fast path) and without them (the scan of every
    process's parent), the same processes, the app itself first, and nothing outside it."""
    child, grandchild = tree
    if not children_lists:
        monkeypatch.setattr(peer, "_children", lambda _pid: None)
    walked = list(peer._tree_nearest_first(child))
    assert walked[0] == child
    assert set(walked) == {child, grandchild}
    assert len(walked) == len(set(walked))
