"""``gateway plugin new`` writes distributions that install and pass their own tests (the kit's contract) at once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main


def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_new_source_and_sink_install_and_pass_their_tests(tmp_path):
    runner = CliRunner()
    for args in (["kitsource", "--dir", str(tmp_path / "src")], ["kitsink", "--sink", "--dir", str(tmp_path / "sink")]):
        result = runner.invoke(main, ["plugin", "new", *args])
        assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "src").iterdir()} == {"pyproject.toml", "setup.cfg", "README.md",
                                                              "gateway_kitsource", "tests"}
    pip("install", "-e", str(tmp_path / "src"), "-e", str(tmp_path / "sink"))
    try:
        listed = subprocess.run([str(Path(sys.executable).parent / "gateway"), "plugins"],
                                capture_output=True, text=True)
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                str(tmp_path / "src" / "tests"), str(tmp_path / "sink" / "tests")],
                               capture_output=True, text=True, cwd=tmp_path)
    finally:
        pip("uninstall", "-y", "gateway-kitsource", "gateway-kitsink")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " failed" not in tests.stdout and " passed" in tests.stdout
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert (plugins["kitsource"]["source_types"], plugins["kitsource"]["samples"]) == (["kitsource"], 2)
    assert (plugins["kitsink"]["sink_types"], plugins["kitsink"]["samples"]) == (["kitsink"], 1)


def test_a_bad_name_or_a_used_directory_is_refused(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["plugin", "new", "Acme-Corp", "--dir", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "lower-case letters" in bad.output
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    used = runner.invoke(main, ["plugin", "new", "acme", "--dir", str(tmp_path / "used")])
    assert used.exit_code == 2 and "is not empty" in used.output
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["notes.txt"]
