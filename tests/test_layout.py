"""The shape issue 10 asked the core to keep: every module small enough to read whole."""
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "gateway"
MAX_LINES = 500


def long_modules(root: Path) -> dict[str, int]:
    """Modules of ``root`` (migrations aside: each is one generated step) longer than MAX_LINES."""
    sizes = {str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
             for path in root.rglob("*.py") if "migrations" not in path.parts}
    return {name: lines for name, lines in sizes.items() if lines > MAX_LINES}


def test_no_core_module_is_over_500_lines():
    assert long_modules(CORE) == {}


def test_the_size_check_can_fail(tmp_path):
    (tmp_path / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "small.py").write_text("x = 1\n" * MAX_LINES)
    assert long_modules(tmp_path) == {"big.py": MAX_LINES + 1}
