"""The installed package is the product: every package is listed for the wheel, and the wheel carries the assets."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for top in ("synth", "components")
               for init in (ROOT / top).rglob("__init__.py")}
    assert on_disk | {"synth.assets"} == listed


def test_wheel_carries_assets(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    for asset in ("theta_default.json", "pair_bank.jsonl", "example_pairs.jsonl", "sample_population.jsonl",
                  "style.css"):
        assert f"synth/assets/{asset}" in names
