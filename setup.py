"""Build hook: copy the top-level models.yaml and seeds/ into the wheel (selfinstruct_local/data/),
so that an installed sigen finds its registry and seed sets without the repository. Everything
else about the package is declared in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "selfinstruct_local" / "data"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "models.yaml", target / "models.yaml")
        (target / "seeds").mkdir(exist_ok=True)
        for seed_file in sorted((ROOT / "seeds").glob("*.jsonl")):
            shutil.copy2(seed_file, target / "seeds" / seed_file.name)


setup(cmdclass={"build_py": BuildWithData})
