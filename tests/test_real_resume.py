"""A build killed mid-training resumes to the uninterrupted run's weights, for every family, with
the real kohya on the family's tiny model (tests/realbuild.py: what was shrunk is said by each
family's launcher, lorabuild/demo/tiny*.py). SD1.5's case is in tests/test_train.py.

Needs kohya's Python stack and vendor/sd-scripts; skips otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lorabuild.demo.demo import TINY_DEMOS
from tests.realbuild import kill_and_resume, kohya_stack

pytestmark = pytest.mark.real_trainer


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("family", list(TINY_DEMOS))
def test_a_killed_build_resumes_to_the_uninterrupted_weights(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kohya_stack()
    kill_and_resume(family, tmp_path, monkeypatch)
