"""Caption rules, applied in their documented order."""

from __future__ import annotations

from pathlib import Path

from lorabuild.recipe.captions import apply_rules, read_caption, split_tags
from lorabuild.recipe.schema import CaptionRules


def rules(**kw: object) -> CaptionRules:
    return CaptionRules.model_validate(kw)


def test_split_trims_and_reads_first_line_only() -> None:
    assert split_tags(" 1girl ,  solo,,short   hair \nsecond line") == ["1girl", "solo", "short hair"]


def test_tutorial_rules() -> None:
    tags = split_tags("1girl, flower, transparent_background, hair_ornament, smile, short_hair, brown_hair")
    out = apply_rules(
        tags,
        rules(
            remove=["flower", "hair_ornament", "short_hair", "brown_hair"],
            move_to_end=["transparent_background"],
        ),
        "uiharu_kazari",
    )
    assert out == ["uiharu_kazari", "1girl", "smile", "transparent_background"]


def test_remove_globs() -> None:
    assert apply_rules(["short_hair", "brown_hair", "hairband"], rules(remove=["*_hair"]), None) == [
        "hairband"
    ]


def test_tag_style_space_and_patterns_match_either_style() -> None:
    out = apply_rules(["short_hair", "^_^"], rules(tag_style="space", remove=["short_hair"]), None)
    assert out == ["^_^"]
    assert apply_rules(["long hair"], rules(tag_style="underscore"), None) == ["long_hair"]


def test_replace_then_dedupe() -> None:
    out = apply_rules(
        ["blonde_hair", "yellow_hair", "smile"], rules(replace={"yellow_hair": "blonde_hair"}), None
    )
    assert out == ["blonde_hair", "smile"]


def test_dedupe_can_be_turned_off() -> None:
    assert apply_rules(["a", "a"], rules(dedupe=False), None) == ["a", "a"]


def test_move_to_front_keeps_pattern_order() -> None:
    out = apply_rules(["smile", "solo", "1girl"], rules(move_to_front=["1girl", "solo"]), None)
    assert out == ["1girl", "solo", "smile"]


def test_trigger_is_first_once() -> None:
    assert apply_rules(["smile", "kazari"], rules(), "kazari") == ["kazari", "smile"]
    assert apply_rules(["smile"], rules(prepend_trigger=False), "kazari") == ["smile"]


def test_missing_caption_gets_trigger_alone() -> None:
    assert apply_rules(split_tags(""), rules(), "kazari") == ["kazari"]


def test_read_caption_reports_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("初春, 花".encode("gbk"))
    caption = read_caption(path)
    assert caption.problem is not None and "not UTF-8" in caption.problem and "GBK" in caption.problem


def test_read_caption_missing_and_bom(tmp_path: Path) -> None:
    assert read_caption(tmp_path / "none.txt").path is None
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfsolo, smile")
    assert read_caption(tmp_path / "b.txt").text == "solo, smile"
