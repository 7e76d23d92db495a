"""The Jobs API entrypoint: check the cluster's Python before running vidbatch on it.

A cluster whose Python lacks vidbatch's dependencies would fail a submitted job with a
``ModuleNotFoundError`` traceback in its log. This module imports nothing beyond the
standard library until it has found every dependency, and otherwise says which interpreter
ran and what to install.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

# import name -> the package that provides it
REQUIRED = {"typer": "typer", "pydantic": "pydantic", "yaml": "pyyaml", "numpy": "numpy",
            "pyarrow": "pyarrow", "ray": "ray[default,data,train]", "torch": "torch",
            "torchvision": "torchvision", "decord": "decord", "av": "av",
            "trackers": "trackers", "librosa": "librosa", "silero_vad": "silero-vad"}


def missing() -> list[str]:
    return [pkg for module, pkg in REQUIRED.items() if importlib.util.find_spec(module) is None]


def main() -> None:
    lacking = missing()
    if lacking:
        print(f"vidbatch: this cluster's Python ({sys.executable}, Python "
              f"{platform.python_version()}) lacks {', '.join(lacking)}. Install vidbatch's "
              "dependencies on every node (pip install the vidbatch project, or use the image "
              "of cluster/Dockerfile), or point the cluster at the interpreter that has them.",
              file=sys.stderr)
        raise SystemExit(2)
    from pipeline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
