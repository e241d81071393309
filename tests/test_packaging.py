"""A wheel of the project, installed outside the checkout, finds its registry and seed sets
from any folder (air-gapped labs install from wheels they carried in)."""

import os
import subprocess
import sys
import zipfile

from selfinstruct_local import __version__
from tests.conftest import REPO


def test_wheel_carries_registry_and_seeds(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = wheels.glob("selfinstruct_local-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"selfinstruct_local/data/models.yaml",
            "selfinstruct_local/data/seeds/en_seed_tasks.jsonl",
            "selfinstruct_local/data/seeds/zh_seed_tasks.jsonl",
            "selfinstruct_local/prompts/en/bootstrap.txt"} <= names

    # Installed into a folder of its own, first on the path; the project venv supplies the
    # dependencies. Run from an unrelated folder, so nothing is found through the checkout.
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
         str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("SIGEN_MODELS_FILE", None)

    def sigen(*args):
        return subprocess.run([sys.executable, "-m", "selfinstruct_local", *args], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=300)

    where = subprocess.run(
        [sys.executable, "-c", "import selfinstruct_local.seeds as s, selfinstruct_local.models "
         "as m; print(s.__file__); print(m.default_models_file()); "
         "print(len(s.load_seed_tasks(s.default_seed_path('zh'))))"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    module, registry, zh_seeds = where.stdout.split()
    assert module.startswith(str(target)) and registry.startswith(str(target))
    assert int(zh_seeds) > 100
    listed = sigen("models", "list")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert f"registry: {target}" in listed.stdout and "smollm2-135m (default)" in listed.stdout
    assert sigen("run", "--help").returncode == 0
    version = sigen("--version")
    assert version.stdout.strip() == f"sigen (selfinstruct-local) {__version__}"
