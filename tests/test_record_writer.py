"""The capture clock and the queue + writer threads (real files, a real full disk)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dataset.session import SessionWriter, load_image, load_session
from record.clock import Ticker
from record.procwriter import ProcessFrameWriter
from record.writer import FrameWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META = {"source": "screen", "game": "test", "resolution": [24, 32], "rate_hz": 30}


def test_ticker_deadlines_are_absolute_and_skip_missed_ticks():
    tk = Ticker(100.0)
    k0, d0 = tk.wait()
    tk.mark(d0)
    time.sleep(0.035)  # a stall of 3.5 periods
    k, d = tk.wait()
    # ticks more than a period late are skipped (counted), not burst through; the one taken
    # stays on the original grid t0 + k / rate
    assert k >= 3 and tk.missed == k - 1
    assert d == pytest.approx(tk.t0 + k * tk.period, abs=1e-12)
    tk.mark(d)
    k2, d2 = tk.wait()
    assert k2 >= k + 1 and d2 == pytest.approx(tk.t0 + k2 * tk.period, abs=1e-12)
    tk.mark(d2)
    st = tk.stats()
    assert st["ticks"] == 3 and st["missed"] == k2 - 2
    with pytest.raises(ValueError, match="rate"):
        Ticker(0)


def _writer(kind, sw, queue_size, n):
    if kind == "process":
        return ProcessFrameWriter(sw, (24, 32, 3), queue_size=queue_size, processes=n)
    return FrameWriter(sw, queue_size=queue_size, threads=n)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_writer_keeps_order_and_every_row_has_its_image(tmp_path, kind):
    sw = SessionWriter(tmp_path / "s", META)
    fw = _writer(kind, sw, 8, 3)
    offered = 200
    for i in range(offered):
        frame = np.full((24, 32, 3), i % 256, np.uint8)
        fw.offer(frame, [0, 0, 1, 0, 0], "human", t=float(i))
    res = fw.close()
    assert res["error"] is None
    assert res["written"] + res["dropped"] == offered  # nothing silently lost
    df = load_session(tmp_path / "s", check_images=True)
    assert df["frame"].tolist() == list(range(res["written"]))
    assert list(df["t"]) == sorted(df["t"])
    for _, row in df.iloc[:: max(1, len(df) // 10)].iterrows():
        assert load_image(tmp_path / "s", row["image"])[0, 0, 0] == int(row["t"]) % 256
    if res["dropped"]:
        assert fw.dropped_full == res["dropped"]  # queue full, counted at capture


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_blocking_offer_never_drops(tmp_path, kind):
    fw = _writer(kind, SessionWriter(tmp_path / "s", META), 2, 1)
    for i in range(30):
        assert fw.offer(np.zeros((24, 32, 3), np.uint8), [0, 0, 0, 0, 0], "expert", float(i), block=True)
    assert fw.close() == {"written": 30, "dropped": 0, "error": None}


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                       capture_output=True)
    return r.returncode == 0


DISK_FULL_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from dataset.session import SessionWriter
    from record.procwriter import ProcessFrameWriter
    from record.writer import FrameWriter

    if __name__ == "__main__":
        meta = {"source": "screen", "game": "t", "resolution": [120, 160], "rate_hz": 30}
        sw = SessionWriter(sys.argv[1], meta)
        if sys.argv[2] == "process":
            fw = ProcessFrameWriter(sw, (120, 160, 3), queue_size=4, processes=2)
        else:
            fw = FrameWriter(sw, queue_size=4, threads=2)
        rng = np.random.default_rng(0)
        offered = 0
        for i in range(400):
            if fw.failed:
                break
            frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # incompressible: fills fast
            fw.offer(frame, [0, 0, 1, 0, 0], "human", float(i), block=True)
            offered += 1
        res = fw.close()
        res["offered"] = offered
        print(json.dumps(res))
""")


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a small tmpfs (needs unshare -rm)")
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_disk_full_stops_cleanly_and_keeps_what_was_written(tmp_path, kind):
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(DISK_FULL_SCRIPT)
    check = textwrap.dedent(f"""
        import json, os, sys
        from dataset.session import load_session, load_image
        df = load_session("{mnt}/s", check_images=True)
        for im in df["image"]:
            load_image("{mnt}/s", im)
        names = sorted(os.listdir("{mnt}/s/frames"))
        print(json.dumps({{"rows": len(df), "files": names, "frames": df["frame"].tolist()}}))
    """)
    # A real filesystem that fills up: a 1 MiB tmpfs in a private mount namespace.
    cmd = (f"mount -t tmpfs -o size=1m tmpfs {mnt} && cd {ROOT} && "
           f"PYTHONPATH={ROOT} {sys.executable} {script} {mnt}/s {kind} && PYTHONPATH={ROOT} {sys.executable} -c '{check}'")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res, after = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert res["error"] and "disk full" in res["error"]
    assert res["written"] > 0 and res["written"] + res["dropped"] == res["offered"]
    assert after["rows"] == res["written"] and after["frames"] == list(range(res["written"]))
    assert not [f for f in after["files"] if f.endswith(".tmp")]  # no partial image left behind
    assert len(after["files"]) == res["written"]  # and no image without its row


def test_a_killed_encoder_process_stops_the_writer_cleanly(tmp_path):
    fw = ProcessFrameWriter(SessionWriter(tmp_path / "s", META), (24, 32, 3), queue_size=8, processes=2)
    for i in range(5):
        fw.offer(np.zeros((24, 32, 3), np.uint8), [0, 0, 1, 0, 0], "human", float(i), block=True)
    os.kill(fw._procs[0].pid, 9)  # e.g. the OOM killer
    deadline = time.monotonic() + 30
    while not fw.failed and time.monotonic() < deadline:
        fw.offer(np.zeros((24, 32, 3), np.uint8), [0, 0, 1, 0, 0], "human", 0.0)
        time.sleep(0.05)
    assert fw.failed and "died" in fw.error
    res = fw.close()  # returns: no wait on the dead encoder
    df = load_session(tmp_path / "s", check_images=True)
    assert len(df) == res["written"] and df["frame"].tolist() == list(range(len(df)))
