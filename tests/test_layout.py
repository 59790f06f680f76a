"""The package's floor plan holds: no import circles, no use of another module's private names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "layout.py"


def _layout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layout", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("layout", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_no_module_of_the_package_imports_itself_in_a_circle() -> None:
    layout = _layout()
    graph = layout.import_graph()
    assert graph.get("pgtrail.trail")  # the graph was read
    assert layout.circles(graph) == []


def test_a_circle_is_found_when_there_is_one() -> None:
    layout = _layout()
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert layout.circles(graph) == [["a", "b", "c"]]


def test_no_module_or_test_uses_another_modules_private_names() -> None:
    layout = _layout()
    files = sorted(layout.PACKAGE.rglob("*.py")) + sorted((layout.ROOT / "tests").rglob("*.py"))
    assert [f"{u.path}:{u.line}: {u.text}" for u in layout.private_uses(files)] == []


def test_a_private_use_is_found_when_there_is_one(tmp_path: Path) -> None:
    layout = _layout()
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from pgtrail.trail import _swallow\n\n\ndef f(trail):\n    return trail._flusher\n"
    )
    found = {u.text for u in layout.private_uses([sample])}
    assert found == {"import _swallow", "trail._flusher"}
