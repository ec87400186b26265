"""Images damaged in the middle: they pass the header and tail probe, and staging reports them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lorabuild.build import dataset as stage
from lorabuild.probe import decodecheck
from lorabuild.probe.decodecheck import decode_problem, decode_problems
from lorabuild.probe.images import probe_image
from lorabuild.problems import RecipeError
from lorabuild.stages.check import check, require_plan
from lorabuild.stages.prepare import prepare
from tests.conftest import Project


def damage_middle(path: Path) -> Path:
    """Flip bytes in the middle of a file, leaving its header and tail intact."""
    data = bytearray(path.read_bytes())
    for k in range(8):
        data[len(data) // 2 + k] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def noisy_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise((256, 256), 40).convert("RGB").save(path)
    return path


def test_damage_in_the_middle_passes_the_probe_but_not_the_decode(tmp_path: Path) -> None:
    good = noisy_png(tmp_path / "good.png")
    bad = damage_middle(noisy_png(tmp_path / "bad.png"))
    assert probe_image(bad).problem is None  # the tail check cannot see it
    assert decode_problem(good) is None
    problem = decode_problem(bad)
    assert problem is not None and problem.startswith("does not decode (") and "IDAT" in problem
    # The process pool gives the same verdicts, in order.
    paths = [good, bad] * 40
    assert decode_problems(paths, workers=2) == [decode_problem(p) for p in paths]


def test_prepare_reports_a_damaged_image_by_name(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = project.root / "data" / "char"
    damage_middle(noisy_png(folder / "004.png"))
    checked = check(project.recipe, [], project.build)
    assert not [p for p in checked.problems if "004.png" in p.key]  # the check's probe passes it
    with pytest.raises(RecipeError) as caught:
        prepare(require_plan(checked))
    (problem,) = caught.value.problems
    assert problem.key == str(Path("data/char/004.png"))
    assert problem.message.startswith("does not decode (") and problem.message.endswith(
        "the file is damaged: re-export or delete it"
    )
    staged = project.build / "Test_v1" / "dataset" / "2_uiharu_kazari"
    assert sorted(p.name for p in staged.glob("*.png")) == ["000.png", "001.png", "002.png", "003.png"]

    # on_bad_image = "skip": a warning, the rest staged; a warm run decodes nothing it has staged.
    checked = check(project.recipe, ["images.on_bad_image=skip"], project.build)
    report = prepare(require_plan(checked))
    assert [p.key for p in report.problems] == [str(Path("data/char/004.png"))]
    decoded: list[str] = []
    real = decodecheck.decode_problems
    monkeypatch.setattr(
        stage, "decode_problems", lambda paths: decoded.extend(map(str, paths)) or real(paths)
    )
    prepare(require_plan(checked))
    assert [Path(p).name for p in decoded] == ["004.png"]  # only the image not staged yet
