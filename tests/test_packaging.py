"""The installed package is the product: every package is listed for the wheel, and the wheel carries the assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from synth import paths

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for top in ("synth", "components")
               for init in (ROOT / top).rglob("__init__.py")}
    assert on_disk | {"synth.assets"} == listed


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    """The file names inside a wheel built from this checkout (no dependencies, no build isolation)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(out)], check=True, capture_output=True)
    return zipfile.ZipFile(next(out.glob("*.whl"))).namelist()


def test_wheel_carries_assets(wheel_names):
    for asset in ("theta_default.json", "pair_bank.jsonl", "example_pairs.jsonl", "sample_population.jsonl",
                  "style.css"):
        assert f"synth/assets/{asset}" in wheel_names


def test_wheel_carries_the_app(wheel_names):
    """``synth app`` imports the studio from ``components``, so every module of it must be in the wheel."""
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "components").glob("*.py")}
    assert {"components/studio.py", "components/try_handlers.py"} <= modules
    assert modules <= set(wheel_names)


def test_space_requirements_match_the_package():
    """A Space installs requirements.txt and runs app.py from the checkout; it must get the same dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    required = [line for line in lines if line and not line.startswith("#")]
    assert required == project["dependencies"] + project["optional-dependencies"]["gpu"]


def test_assets_are_read_from_the_checkout_when_not_installed(monkeypatch):
    def not_installed(package):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(paths, "files", not_installed)
    assert paths.asset_path("style.css") == ROOT / "assets" / "style.css"
