"""A keep-alive client of the drive protocol (simulator client, tests, benchmark).

One HTTP/1.1 connection, reused for every poll, as the C plugin does.
"""

from __future__ import annotations

import http.client
import json

import numpy as np


class DriveClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def post(self, controller: int, frame: np.ndarray, *, index: int | None = None,
             telemetry: str | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        """POST one RGB frame; returns (status, body)."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        h, w = frame.shape[:2]
        hdrs = {"X-Frame": f"{w}x{h}x3", "Content-Type": "application/octet-stream"}
        if index is not None:
            hdrs["X-Frame-Index"] = str(index)
        if telemetry:
            hdrs["X-Telemetry"] = telemetry
        hdrs.update(headers or {})
        return self.request("POST", f"/{controller}", frame.data, hdrs)

    def get(self, controller: int) -> tuple[int, bytes]:
        return self.request("GET", f"/{controller}")

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def api(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict | str]:
        """Dashboard API call; JSON answers decoded."""
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
