"""`lorabuild tags` and tags.csv: tag frequencies before and after the caption rules."""

from __future__ import annotations

import fnmatch
import random
from pathlib import Path

from lorabuild.plan.tags import subset_tag_counts, tags_csv, tags_text
from lorabuild.recipe.captions import apply_rules, normalise
from lorabuild.recipe.schema import CaptionRules
from lorabuild.stages.check import check, require_plan
from tests.conftest import Project, run_lorabuild

FIXTURE_TABLE = """\
[0] data/char -> dataset/2_uiharu_kazari: 4 images, 12 tags
  before  after  tag
       4      4  1girl
       4      -  flower
       -      4  uiharu_kazari
       3      -  brown_hair
       3      -  short_hair
       3      3  solo
       2      -  hair_ornament
       2      2  smile
       1      1  looking_at_viewer
       1      1  school_uniform
       1      1  transparent_background
       1      1  white_background"""


def test_tags_command_prints_the_table(project: Project) -> None:
    result = run_lorabuild("tags", "recipe.toml", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == FIXTURE_TABLE
    assert not (project.root / "build").exists()  # tags only reads


def test_tags_csv_has_the_same_numbers(project: Project) -> None:
    plan = require_plan(check(project.recipe, [], Path("build")))
    assert tags_text(plan) == FIXTURE_TABLE
    lines = tags_csv(plan).decode("utf-8").splitlines()
    assert lines[:4] == [
        "subset,folder,tag,before,after",
        "0,2_uiharu_kazari,1girl,4,4",
        "0,2_uiharu_kazari,flower,4,0",
        "0,2_uiharu_kazari,uiharu_kazari,0,4",
    ]
    assert len(lines) == 13


def test_counts_are_images_not_occurrences(project: Project) -> None:
    # A tag written twice in one caption counts once; tag_style merges spellings after the rules.
    (project.root / "data" / "char" / "000.txt").write_text("smile, smile, short hair, 1girl", "utf-8")
    plan = require_plan(check(project.recipe, ["captions.tag_style=underscore"], Path("build")))
    counts = {c.tag: (c.before, c.after) for c in subset_tag_counts(plan.subsets[0])}
    assert counts["smile"] == (2, 2)
    assert counts["short hair"] == (1, 0) and counts["short_hair"] == (2, 0)


def test_two_subsets_get_two_blocks(project: Project) -> None:
    project.add_images("data/reg", captions=["1boy", "1boy, smile"])
    text = (project.root / "recipe.toml").read_text("utf-8")
    text += '\n[[dataset.subsets]]\nsource = "data/reg"\nis_reg = true\n'
    project.write_recipe(text)
    plan = require_plan(check(project.recipe, [], Path("build")))
    blocks = tags_text(plan).split("\n\n")
    assert len(blocks) == 2
    assert blocks[1].splitlines()[:3] == [
        "[1] data/reg -> dataset/1_reg_reg: 4 images, 2 tags",
        "  before  after  tag",
        "       2      2  1boy",
    ]


def _reference_rules(tags: list[str], rules: CaptionRules, trigger: str | None) -> list[str]:
    """The caption rules written out step by step, in the documented order."""
    style = rules.tag_style

    def matches(tag: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(tag, p) if any(c in p for c in "*?[") else tag == p for p in patterns)

    out = [normalise(t, style) for t in tags]
    replace = {normalise(k, style): normalise(v, style) for k, v in rules.replace.items()}
    out = [t for t in (replace.get(t, t) for t in out) if t]
    out = [t for t in out if not matches(t, [normalise(p, style) for p in rules.remove])]
    if rules.dedupe:
        out = list(dict.fromkeys(out))
    front: list[str] = []
    for pattern in rules.move_to_front:
        front.extend(t for t in out if matches(t, [normalise(pattern, style)]) and t not in front)
    end = [t for t in out if t not in front and matches(t, [normalise(p, style) for p in rules.move_to_end])]
    out = front + [t for t in out if t not in front and t not in end] + end
    if rules.prepend_trigger and trigger:
        out = [trigger] + [t for t in out if t != trigger]
    return out


def test_compiled_caption_rules_match_the_reference() -> None:
    """The rules are compiled once per recipe for speed; they must give what the steps say."""
    rng = random.Random(7)
    vocabulary = ["1girl", "solo", "short hair", "short_hair", "long_hair", " smile ", "flower", "red_flower",
                  "hair_flower", "kazari", "", "white  background", "transparent_background", "^_^"]  # fmt: skip
    for _ in range(300):
        rules = CaptionRules.model_validate(
            {
                "tag_style": rng.choice(["keep", "underscore", "space"]),
                "replace": {
                    rng.choice(vocabulary) or "x": rng.choice(vocabulary) for _ in range(rng.randint(0, 2))
                },
                "remove": rng.sample(
                    ["flower", "*_flower", "short hair", "solo", "*hair*"], rng.randint(0, 3)
                ),
                "dedupe": rng.random() < 0.8,
                "move_to_front": rng.sample(["solo", "1girl", "*_hair"], rng.randint(0, 2)),
                "move_to_end": rng.sample(["transparent_background", "white*"], rng.randint(0, 2)),
                "prepend_trigger": rng.random() < 0.8,
            }
        )
        for _ in range(5):
            tags = [rng.choice(vocabulary) for _ in range(rng.randint(0, 10))]
            trigger = rng.choice(["kazari", None, "solo"])
            assert apply_rules(tags, rules, trigger) == _reference_rules(tags, rules, trigger), (tags, rules)
