"""Installing the package never adds a second TensorFlow. (Where training runs: ``test_cli``'s
real run with ``CUDA_VISIBLE_DEVICES=""``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

from packaging.utils import canonicalize_name

from .conftest import REPO


def test_installing_next_to_an_installed_tensorflow_adds_no_tensorflow(tmp_path: Path) -> None:
    """A fresh venv that sees this test environment's packages (tensorflow-cpu 2.21 among them, and
    the setuptools ``[test]`` asks for): pip's own resolver plans the install of ``-e .[cpu]``
    offline and it holds the package alone; the built metadata asks for a TensorFlow only under the
    cpu/gpu extras, so ``pip install -e .`` next to a user's ``tensorflow`` (the GPU-capable
    package) adds no ``tensorflow-cpu`` to its folder.

    The venv sees this environment through a ``.pth`` file, not ``system_site_packages``: that
    would show it the base interpreter's packages (setuptools 65.5 and no ``wheel`` on a fresh
    machine, which cannot build the editable metadata), whatever this environment installed."""
    env_dir = tmp_path / "venv"
    # Linked, not copied: a temp folder may be mounted noexec. pip, setuptools and TensorFlow come
    # from this environment.
    venv.create(env_dir, with_pip=False, symlinks=True)
    inner = subprocess.run([env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    outer = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(inner, "test-environment.pth").write_text("".join(f"{path}\n" for path in sorted(outer)), encoding="utf-8")
    python = str(env_dir / "bin" / "python")
    # pip as a fresh machine's: no PIP_* setting nor configuration file of this one (PIP_USER=1 failed it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = tmp_path / "report.json"
    done = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet",
         "--report", str(report), "-e", f"{REPO}[cpu]"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (plan,) = json.loads(report.read_text(encoding="utf-8"))[
        "install"
    ]  # only the package itself: [cpu]'s tensorflow-cpu is there
    # pip reports the name as built: "tradeoff_search" or "tradeoff-search" by setuptools' version
    assert canonicalize_name(plan["metadata"]["name"]) == "tradeoff-search"
    tensorflows = [r for r in plan["metadata"]["requires_dist"] if r.lower().startswith("tensorflow")]
    assert tensorflows == ['tensorflow-cpu==2.21.*; extra == "cpu"', 'tensorflow[and-cuda]==2.21.*; extra == "gpu"']
