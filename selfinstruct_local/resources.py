"""Where the project's data files are: the model registry (models.yaml) and the seed sets.

Their sources live at the top of the repository, where the design puts them. A wheel carries
copies inside the package (selfinstruct_local/data/, written by setup.py at build time), so an
installed `sigen` finds them from any folder, with no checkout. A source checkout (an editable
install, `make test`) reads the sources themselves, so an edit takes effect at once.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
PACKAGED_DATA = PACKAGE_DIR / "data"
DATA_FILES = ("models.yaml", "seeds")  # what setup.py copies into the package


def project_file(relative: str) -> Path:
    """`relative` (e.g. "models.yaml", "seeds/en_seed_tasks.jsonl") in the source checkout when
    running from one, else in the installed package's copy."""
    if (SOURCE_ROOT / "pyproject.toml").is_file() and (SOURCE_ROOT / relative).exists():
        return SOURCE_ROOT / relative
    return PACKAGED_DATA / relative
