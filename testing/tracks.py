"""Small track files for tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# A small grass-edged oval (~8 s a lap at top speed): quick laps, no falls.
OVAL = {
    "name": "oval",
    "points": [[30 * np.cos(a), 18 * np.sin(a), 12.0] for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)],
    "surface": {"offroad": "grass", "offroad_speed": 0.45},
    "theme": "meadow",
    "checkpoint_spacing": 15,
}


def write_oval(path: str | Path) -> Path:
    """The oval as a track file at ``path``."""
    path = Path(path)
    path.write_text(json.dumps(OVAL))
    return path
