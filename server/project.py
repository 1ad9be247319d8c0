"""The repository as a Flower app: the ``[tool.flwr.app.config]`` table of ``pyproject.toml``.

``flwr run .`` in a checkout reads its defaults from that table; ``liteheart-sim run`` reads
them from :class:`liteheart_core.config.FedConfig`. The table is generated from the dataclass
(``python -m server.project`` rewrites it) and ``tests/test_flower_app.py`` fails when the two
disagree, so there is one source of defaults. Kept free of torch and Flower.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import tomli_w

from liteheart_core.config import FedConfig

# where a `flwr run .` run keeps its state (not science: never sent to the nodes). A relative run-dir is
# relative to the folder the local SuperLink was started in (the first `flwr run` there).
# resume: a run id of the registry to continue from its last completed round ("" = a new run)
PROJECT_OPTIONS: dict[str, Any] = {"run-dir": "runs", "db-url": "", "resume": ""}
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_TABLE = re.compile(r"^\[tool\.flwr\.app\.config\]\n(?:(?!\[).*\n)*", re.MULTILINE)


def project_run_config() -> dict[str, Any]:
    """Every scenario key with its default (FedConfig's), then where the run keeps its state."""
    return {**FedConfig().to_dict(), **PROJECT_OPTIONS}


def config_table() -> str:
    """The ``[tool.flwr.app.config]`` table as TOML text (ends with a blank line)."""
    return "[tool.flwr.app.config]\n" + tomli_w.dumps(project_run_config()) + "\n"


def sync_pyproject(path: Path = PYPROJECT) -> bool:
    """Rewrite the table in ``path`` from the defaults; True when it changed."""
    text = path.read_text()
    if not _TABLE.search(text):
        raise ValueError(f"{path} has no [tool.flwr.app.config] table to rewrite")
    new = _TABLE.sub(lambda _: config_table(), text, count=1)
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    changed = sync_pyproject(Path(sys.argv[1]) if len(sys.argv) > 1 else PYPROJECT)
    print("pyproject.toml: [tool.flwr.app.config] " + ("rewritten from FedConfig" if changed else "already agrees"))
