"""Optional live preview page: the frame being recorded and a plot of the stick.

``python -m record ... --preview 8765`` then open http://127.0.0.1:8765/.
The capture loop only stores references (publish); encoding the JPEG happens
in the HTTP thread, on request, so the page never slows the capture.
"""

from __future__ import annotations

import io
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>KartPilot recorder</title>
<style>body{background:#111;color:#ddd;font:14px monospace;margin:12px}img{image-rendering:pixelated;
border:1px solid #444;max-width:640px}canvas{border:1px solid #444;background:#000}</style></head><body>
<div id="s">...</div><img id="f" src="/frame.jpg"><br><canvas id="c" width="640" height="160"></canvas>
<script>
const c=document.getElementById('c').getContext('2d'),cols=['#f55','#5af','#5f5','#fa5','#ccc'];
async function tick(){
  try{const r=await fetch('/state.json');const s=await r.json();
    document.getElementById('s').textContent=`${s.frames} frames  ${s.rate_hz.toFixed(1)} Hz  dropped ${s.dropped}  `+
      `x=${s.action[0].toFixed(2)} y=${s.action[1].toFixed(2)} A=${s.action[2]} B=${s.action[3]} R=${s.action[4]}`;
    c.clearRect(0,0,640,160);
    for(let k=0;k<5;k++){c.strokeStyle=cols[k];c.beginPath();
      s.history.forEach((a,i)=>{const y=80-a[k]*70;i?c.lineTo(i*640/Math.max(1,s.history.length-1),y):c.moveTo(0,y)});c.stroke();}
    document.getElementById('f').src='/frame.jpg?'+Date.now();
  }catch(e){document.getElementById('s').textContent='recorder stopped';}
  setTimeout(tick,200);}
tick();
</script></body></html>"""


class Preview:
    def __init__(self, port: int = 8765, host: str = "127.0.0.1", history: int = 300):
        self._frame = None
        self._state = {"frames": 0, "rate_hz": 0.0, "dropped": 0, "action": [0.0] * 5}
        self._history: deque = deque(maxlen=history)
        preview = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the terminal for the status line
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", PAGE.encode())
                elif path == "/state.json":
                    body = {**preview._state, "history": list(preview._history)}
                    self._send(200, "application/json", json.dumps(body).encode())
                elif path == "/frame.jpg":
                    frame = preview._frame
                    if frame is None:
                        self._send(404, "text/plain", b"no frame yet")
                        return
                    buf = io.BytesIO()
                    Image.fromarray(frame).save(buf, format="JPEG", quality=80)
                    self._send(200, "image/jpeg", buf.getvalue())
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="preview", daemon=True)
        self._thread.start()

    def publish(self, frame: np.ndarray, action, *, frames: int, rate_hz: float, dropped: int) -> None:
        """Called by the capture loop: stores references only."""
        self._frame = frame
        vec = [round(float(v), 3) for v in action]
        self._history.append(vec)
        self._state = {"frames": frames, "rate_hz": float(rate_hz), "dropped": int(dropped), "action": vec}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
