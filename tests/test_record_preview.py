"""The optional preview page, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from record.preview import Preview


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read()


def test_preview_serves_frame_state_and_page():
    pv = Preview(0)
    try:
        assert pv.url.startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(pv.url + "frame.jpg")
        assert err.value.code == 404
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 200
        for i in range(5):
            pv.publish(frame, [i / 10, 0, 1, 0, 0], frames=i + 1, rate_hz=30.0, dropped=0)
        code, ctype, body = _get(pv.url + "state.json")
        state = json.loads(body)
        assert code == 200 and ctype == "application/json"
        assert state["frames"] == 5 and state["action"] == [0.4, 0.0, 1.0, 0.0, 0.0] and len(state["history"]) == 5
        code, ctype, body = _get(pv.url + "frame.jpg")
        img = np.asarray(Image.open(io.BytesIO(body)))
        assert ctype == "image/jpeg" and img.shape == (48, 64, 3) and img[..., 2].mean() > 150
        code, ctype, body = _get(pv.url)
        assert b"KartPilot recorder" in body and ctype.startswith("text/html")
    finally:
        pv.close()
