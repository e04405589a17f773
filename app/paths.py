"""Where the files that ship beside the code live.

A checkout keeps `templates/` and `app.yml` at the top level; an installed wheel carries them
inside the `app` package (see `[tool.hatch.build.targets.wheel.force-include]`).
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[-1]


TEMPLATES_DIR = _first_existing(_PACKAGE / "templates", _PACKAGE.parent / "templates")
MANIFEST_PATH = _first_existing(_PACKAGE / "app.yml", _PACKAGE.parent / "app.yml")
