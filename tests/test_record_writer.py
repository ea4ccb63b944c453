"""The capture clock and the session sink behind the recorder: queue + encoder threads or
processes (real files, a real full disk)."""

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
from dataset.sink import ProcessSessionSink, SessionSink
from record.clock import Ticker

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
        return ProcessSessionSink(sw, (24, 32, 3), queue_size=queue_size, encoders=n)
    return SessionSink(sw, queue_size=queue_size, encoders=n)


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
    assert fw.close() == {"path": str(tmp_path / "s"), "written": 30, "dropped": 0, "error": None}


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
    from dataset.sink import ProcessSessionSink, SessionSink

    if __name__ == "__main__":
        meta = {"source": "screen", "game": "t", "resolution": [120, 160], "rate_hz": 30}
        sw = SessionWriter(sys.argv[1], meta)
        if sys.argv[2] == "process":
            fw = ProcessSessionSink(sw, (120, 160, 3), queue_size=4, encoders=2)
        else:
            fw = SessionSink(sw, queue_size=4, encoders=2)
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
    fw = ProcessSessionSink(SessionWriter(tmp_path / "s", META), (24, 32, 3), queue_size=8, encoders=2)
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


ROW_FAILS_SCRIPT = textwrap.dedent('''
    import json, os, subprocess, sys, time
    import numpy as np
    from dataset.session import SessionWriter, load_session
    from dataset.sink import ProcessSessionSink, SessionSink
    from drive.recording import PluginRecording

    PAGE = 4096
    META = {"source": "screen", "game": "t", "resolution": [4, 6], "rate_hz": 30}
    FRAME = np.full((4, 6, 3), 7, np.uint8)  # a ~80-byte PNG: one page of tmpfs per image


    def fill(mnt, leave_pages):
        """Fill the filesystem, then free exactly ``leave_pages`` pages."""
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, bytes(PAGE))
        except OSError:
            pass
        os.close(fd)
        os.truncate(filler, os.path.getsize(filler) - leave_pages * PAGE)
        return filler


    def scenario(mnt, kind):
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt], check=True)
        if kind == "drive":  # the drive server's plugin recording
            rec = PluginRecording(os.path.join(mnt, "sessions"), {"game": "t", "rate_hz": 60})
            path = rec.start()
            put = lambda i: rec.save(FRAME, np.array([0, 0, 1, 0, 0], np.float32), float(i))
            written = lambda: rec.summary()["frames"]
        else:
            path = os.path.join(mnt, "s")
            sw = SessionWriter(path, META)
            if kind == "process":
                sink = ProcessSessionSink(sw, (4, 6, 3), queue_size=4, encoders=2)
            else:
                sink = SessionSink(sw, queue_size=4, encoders=2)
            put = lambda i: sink.offer(FRAME, [0, 0, 1, 0, 0], "human", float(i), block=True)
            written = lambda: sink.written
        offered = 0
        while True:  # one frame at a time until the next row must start a new page of frames.csv
            put(offered)
            offered += 1
            deadline = time.monotonic() + 30
            while written() < offered and time.monotonic() < deadline:
                time.sleep(0.002)
            size = os.path.getsize(os.path.join(path, "frames.csv"))
            if offered > 3 and PAGE - size % PAGE < 60:  # every row is longer than 60 bytes
                break
        filler = fill(mnt, 1)
        put(offered)  # its image takes the last page; its row cannot get one
        offered += 1
        time.sleep(0.5)
        os.unlink(filler)  # room again: a row kept back must not be written now
        put(offered)
        offered += 1
        time.sleep(0.5)
        if kind == "drive":
            res = rec.stop()
            res["written"] = res.pop("frames")
        else:
            res = sink.close()
        df = load_session(path)
        images = sorted(os.listdir(os.path.join(path, "frames")))
        print(json.dumps({"kind": kind, "offered": offered, "res": res, "rows": df["image"].tolist(),
                          "frames": df["frame"].tolist(), "images": images,
                          "meta": json.load(open(os.path.join(path, "meta.json")))}))


    if __name__ == "__main__":
        for kind in sys.argv[2:]:
            scenario(os.path.join(sys.argv[1], kind), kind)
''')


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a small tmpfs (needs unshare -rm)")
def test_a_row_that_hits_a_full_disk_never_appears_later(tmp_path):
    """The row whose write fails on a full disk (its image fit, the row did not) is not in
    frames.csv after close, even once space comes back; the image is removed, later frames
    are refused and counted; the same for the recorder's sinks and the drive server's."""
    script = tmp_path / "rowfail.py"
    script.write_text(ROW_FAILS_SCRIPT)
    kinds = ["thread", "process", "drive"]
    out = subprocess.run(["unshare", "-rm", "sh", "-c", f"cd {ROOT} && PYTHONPATH={ROOT} {sys.executable} "
                          f"{script} {tmp_path / 'm'} {' '.join(kinds)}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["kind"] for r in results] == kinds
    for r in results:
        res, rows = r["res"], r["rows"]
        n = res["written"]
        assert n >= 4 and n == len(rows), r  # what is reported is what is on disk
        assert r["frames"] == list(range(n)), r
        assert sorted(name.split("/")[1] for name in rows) == r["images"], r  # rows and images agree
        assert res["error"] and "disk full" in res["error"], r
        assert n + res["dropped"] == r["offered"], r  # the failed frame and the later one: counted
        assert r["meta"]["frames"] == n and r["meta"]["dropped"] == res["dropped"], r
