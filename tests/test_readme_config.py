"""The README's "every key" config block: each value not marked ``# example`` is the code's default."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from bauxite.settings import settings_from_mapping
from cli_run import ROOT

KeyPath = tuple[str | int, ...]


def every_key_block() -> tuple[str, Any]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split("**Each value shown is the default**", 1)[1]
    body = re.search(r"```yaml\n(.*?)```", after, re.S)
    assert body, "the README lost its every-key config block"
    return body.group(1), yaml.compose(body.group(1))


def leaves(node: Any, path: KeyPath = ()) -> list[tuple[KeyPath, int]]:
    """(key path, line) of every key whose value is a scalar or a one-line (flow) collection."""
    out: list[tuple[KeyPath, int]] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = (*path, key.value)
            if isinstance(value, yaml.ScalarNode) or value.flow_style:
                out.append((here, key.start_mark.line))
            else:
                out.extend(leaves(value, here))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out.extend(leaves(item, (*path, index)))
    return out


def dumped(data: dict[str, Any]) -> dict[str, Any]:
    return settings_from_mapping(data, "README").model_dump(mode="json")


def at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def test_unmarked_values_are_the_defaults() -> None:
    text, root = every_key_block()
    lines = text.splitlines()
    data = yaml.safe_load(text)
    full = dumped(data)
    checked = 0
    for path, line in leaves(root):
        if "# example" in lines[line]:
            continue
        without = copy.deepcopy(data)
        del at(without, path[:-1])[path[-1]]
        # Loading the block without this key gives the default: the value shown must load to the same.
        assert at(full, path) == at(dumped(without), path), f"README line {line + 1}: {lines[line].strip()}"
        checked += 1
    assert checked >= 20


def test_required_keys_are_marked_as_examples() -> None:
    text, root = every_key_block()
    lines = text.splitlines()
    for path, line in leaves(root):
        if path[0] == "clusters" and path[-1] in ("name", "region", "url", "models"):
            assert "# example (required)" in lines[line], lines[line]
