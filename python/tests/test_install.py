"""The package installs from the checkout without a network: by
`cmake --install` into a Python package path, and by
`pip install --no-build-isolation` (protoc runs as it builds)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # python/
ROOT = os.path.dirname(SRC)
BUILD = os.environ.get("SA_BUILD_DIR", "")
CHECK = ("import sandbox_agent, sandbox_agent.agent_pb2 as pb, os; "
         "print(os.path.dirname(sandbox_agent.__file__)); "
         "assert pb.Request(ping=pb.Ping()).WhichOneof('op') == 'ping'")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(extra)
    return env


@pytest.mark.skipif(not BUILD, reason="SA_BUILD_DIR (the cmake build) not given")
def test_cmake_install(tmp_path: "os.PathLike[str]") -> None:
    prefix = os.path.join(tmp_path, "prefix")
    subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix, "--component", "python"],
                   check=True, capture_output=True)
    site = subprocess.run([sys.executable, os.path.join(SRC, "site_dir.py"), prefix],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert site.startswith(prefix)
    for f in ("__init__.py", "aio.py", "agent_pb2.py", "agent_pb2.pyi", "py.typed"):
        assert os.path.isfile(os.path.join(site, "sandbox_agent", f)), f
    out = subprocess.run([sys.executable, "-c", CHECK], env=_env(PYTHONPATH=site), cwd=tmp_path,
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == os.path.join(site, "sandbox_agent")
    # Where the system Python looks: Debian's dist-packages for /usr.
    if os.path.isdir("/usr/lib/python3/dist-packages"):
        usr = subprocess.run([sys.executable, os.path.join(SRC, "site_dir.py"), "/usr"],
                             check=True, capture_output=True, text=True).stdout.strip()
        assert usr in sys.path or usr == "/usr/lib/python3/dist-packages"


def test_pip_install_offline(tmp_path: "os.PathLike[str]") -> None:
    # A copy of python/ and proto/, so the build leaves nothing in the checkout.
    tree = os.path.join(tmp_path, "tree")
    shutil.copytree(SRC, os.path.join(tree, "python"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__",
                                                  "agent_pb2.py*", "tests"))
    shutil.copytree(os.path.join(ROOT, "proto"), os.path.join(tree, "proto"))
    venv = os.path.join(tmp_path, "venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    r = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                        "--disable-pip-version-check", os.path.join(tree, "python")],
                       env=_env(PIP_NO_INPUT="1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out = subprocess.run([py, "-c", CHECK], env=_env(), cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip().startswith(venv)
