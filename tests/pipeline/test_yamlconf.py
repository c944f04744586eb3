"""The YAML loader itself: duplicate keys, typed partial overrides merged key by key, file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.base.errors import ConfigError
from pipeline.base.yamlconf import (
    FieldError,
    Overrides,
    build_dataclass,
    load_yaml,
    merge_overrides,
)

from support.files import write


@dataclass(frozen=True)
class Inner:
    a: int = 1
    b: str = "x"


@dataclass(frozen=True)
class Section:
    level: float = 0.5
    low: int = 1
    high: int = 10
    inner: Inner = field(default_factory=Inner)
    names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.low > self.high:
            raise FieldError(("low", "high"), "low must not exceed high")
        if not 0 < self.level < 1:
            raise ValueError("level must be in (0, 1)")


@dataclass(frozen=True)
class Top:
    name: str
    section: Overrides[Section] = field(default_factory=lambda: Overrides(Section))


@pytest.mark.parametrize(("text", "line", "key"), [
    ("a: 1\nb: 2\na: 3\n", 3, "a"),
    ("outer:\n  x: 1\n  y: 2\n  x: 1\n", 4, "outer.x"),
    ("items:\n  - {k: 1, k: 2}\n", 2, "items.0.k"),
    ("1: one\n1: uno\n", 2, "1"),
])
def test_duplicate_keys_name_the_second_line(tmp_path: Path, text: str, line: int,
                                             key: str) -> None:
    path = write(tmp_path / "d.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert str(err.value).startswith(f"{path}:{line}: duplicate key {key!r}")


def test_merge_keys_and_aliases_are_not_duplicates(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path / "m.yaml", (
        "base: &b {x: 1, y: 2}\n"
        "derived:\n  <<: *b\n  y: 3\n"
        "again: *b\n")))
    assert doc.data["derived"] == {"x": 1, "y": 3} and doc.data["again"] == {"x": 1, "y": 2}


def test_overrides_field_keeps_only_the_keys_given(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "name: t\nsection:\n  low: 3\n  inner: {b: y}\n")
    doc = load_yaml(path)
    top = build_dataclass(Top, doc.data, doc)
    assert dict(top.section) == {"low": 3, "inner": {"b": "y"}}
    assert top.section.where("low") == f"{path}:3"
    # a layer is checked on its own when loaded: unknown keys and types at their line
    bad = write(tmp_path / "bad.yaml", "name: t\nsection:\n  inner:\n    c: 1\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:4: unknown key 'section\.inner\.c'"):
        doc = load_yaml(bad)
        build_dataclass(Top, doc.data, doc)


def test_merge_overrides_key_by_key_with_each_files_lines(tmp_path: Path) -> None:
    first = load_yaml(write(tmp_path / "first.yaml",
                            "name: a\nsection:\n  low: 3\n  inner: {a: 5, b: y}\n"))
    second = load_yaml(write(tmp_path / "second.yaml",
                             "name: b\nsection:\n  inner: {b: z}\n  names: [p]\n"))
    layers = [build_dataclass(Top, d.data, d).section for d in (first, second)]
    merged = merge_overrides(Section, layers)
    assert merged == Section(low=3, inner=Inner(a=5, b="z"), names=["p"])
    cli = Overrides.from_mapping(Section, {"high": 2}, "command line", key_path=("section",))
    # low (3, first.yaml) > high (2, command line): the last layer naming one of them is blamed
    with pytest.raises(ConfigError, match=r"^command line: section\.high: low must not exceed"):
        merge_overrides(Section, [*layers, cli])
    third = load_yaml(write(tmp_path / "third.yaml", "name: c\nsection:\n\n  high: 2\n"))
    with pytest.raises(ConfigError) as err:
        merge_overrides(Section, [*layers, build_dataclass(Top, third.data, third).section])
    assert str(err.value).startswith(f"{tmp_path / 'third.yaml'}:4: section.high:")
    # a wrong type in the top layer names that layer's file
    with pytest.raises(ConfigError, match=r"^command line: section\.level: expected a number"):
        Overrides.from_mapping(Section, {"level": "high"}, "command line", key_path=("section",))
    # a plain ValueError of validate() names the section of the last layer
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'second.yaml'}:2: section: level"):
        merge_overrides(Section, [layers[0], Overrides(Section, {"level": 2.0}, second,
                                                       ("section",))])
