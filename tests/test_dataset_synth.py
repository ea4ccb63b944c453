"""The synthetic sessions (testing.sessions) load like real ones."""

from __future__ import annotations

import numpy as np

from dataset.session import load_session
from testing.sessions import desktop_image, game_session


def test_synthetic_session_loads(tmp_path):
    p = game_session(tmp_path / "s", n=5)
    df = load_session(p, check_images=True)
    assert len(df) == 5 and df.attrs["meta"]["source"] == "sim"
    assert desktop_image(120, 160, np.random.default_rng(0)).shape == (120, 160, 3)
