"""A regular (non-editable) install: the wheels of the core and the bundled plugins, installed into a
fresh venv outside the checkout, must migrate, check the config, serve and take a webhook by themselves."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from testkit.shipping import (DISTRIBUTIONS, PLUGIN_DIRS, ROOT, SHIPPED_CONFIG, assert_versions,
                              post_webhook_and_read_back, version)
from testkit.support import free_port, wait_healthy

TOKEN = "packaging-admin-token"


def build_wheelhouse(target: Path) -> Path:
    """The wheels ``make wheels`` builds, from a copy of the sources (setuptools builds in the tree and
    a stale build/ there could hide a missing file)."""
    sources = target / "src"
    shutil.copytree(ROOT, sources, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "instance", "*.egg-info", "__pycache__", "node_modules"))
    wheelhouse = target / "wheelhouse"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheelhouse), ".",
                    *PLUGIN_DIRS], cwd=sources, check=True, capture_output=True, timeout=600)
    return wheelhouse


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """bin/ of a venv holding only the wheels (and their dependencies from the same wheelhouse)."""
    work = tmp_path_factory.mktemp("packaging")
    wheelhouse = build_wheelhouse(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                    str(wheelhouse), *DISTRIBUTIONS], check=True, capture_output=True, timeout=300)
    return wheelhouse, venv / "bin"


def wheel_names(wheelhouse: Path, distribution: str) -> list[str]:
    [wheel] = wheelhouse.glob(f"{distribution.replace('-', '_')}-*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_wheels_carry_every_migration_and_one_version(installed):
    wheelhouse, _ = installed
    names = wheel_names(wheelhouse, "alert-gateway")
    migrations = sorted(p.name for p in (ROOT / "gateway" / "store" / "migrations" / "versions").glob("*.py"))
    assert "gateway/store/migrations/env.py" in names and "gateway/store/migrations/script.py.mako" in names
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("gateway/store/migrations/versions/")) \
        == migrations
    data = [p.relative_to(ROOT).as_posix() for d in ("templates", "static", "translations")
            for p in (ROOT / "gateway").rglob(f"{d}/**/*") if p.is_file() and "__pycache__" not in p.parts]
    assert not set(data) - set(names), "data files left out of the wheel"
    for distribution in DISTRIBUTIONS:
        assert any(n.endswith(f"-{version()}.dist-info/METADATA") for n in wheel_names(wheelhouse, distribution))


@pytest.mark.parametrize("directory", [".", *PLUGIN_DIRS])
def test_every_distribution_takes_its_version_from_the_one_version_file(directory):
    """Bundled plugins are released with the core: their VERSION is a link to the repository's."""
    assert "version = file: VERSION" in (ROOT / directory / "setup.cfg").read_text()
    assert (ROOT / directory / "VERSION").resolve() == ROOT / "VERSION"


def test_installed_wheels_migrate_check_serve_and_take_a_webhook(installed, tmp_path):
    _, bin_dir = installed
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
           "GATEWAY_CONFIG": str(SHIPPED_CONFIG), "GATEWAY_ADMIN_TOKEN": TOKEN}
    env.pop("PYTHONPATH", None)

    def gateway(*args: str) -> str:
        done = subprocess.run([bin_dir / "gateway", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert_versions(gateway("--version"))
    imported_from = gateway_module_path(bin_dir)
    assert str(ROOT) not in imported_from, f"the venv imports the checkout: {imported_from}"
    assert "database at head" in gateway("db", "upgrade")
    assert "FAILED" not in gateway("config", "check")

    port = free_port()
    proc = subprocess.Popen([bin_dir / "gateway", "serve", "--workers", "1", "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        post_webhook_and_read_back(f"http://127.0.0.1:{port}", TOKEN)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def gateway_module_path(bin_dir: Path) -> str:
    return subprocess.run([bin_dir / "python", "-c", "import gateway; print(gateway.__file__)"], check=True,
                          capture_output=True, text=True, cwd="/").stdout
