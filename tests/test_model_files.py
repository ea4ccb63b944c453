"""Model files survive a failed write: save_model and the fit's checkpoints replace atomically,
a resume after the failure picks up where the files say, and early stopping resumes its count.

The failure is real: a child process writes under RLIMIT_FSIZE (the kernel refuses writes past
1 MiB with EFBIG, as a full disk refuses them with ENOSPC) while a PilotNet file is ~6-20 MiB.
"""

from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 1 << 20  # bytes any file of the child may reach

LIMITED = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG (like ENOSPC)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def run_limited(body: str) -> subprocess.CompletedProcess:
    code = LIMITED.format(limit=LIMIT) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def leftovers(folder) -> list[str]:
    return glob.glob(os.path.join(str(folder), ".*.tmp-*"))


def test_save_model_keeps_the_previous_file_when_a_write_fails(tmp_path):
    from train.model import build_pilotnet, load_model, save_model

    path = str(tmp_path / "m.keras")
    good = build_pilotnet()
    save_model(good, path)
    assert os.path.getsize(path) > LIMIT
    proc = run_limited(f"""
        from train.model import build_pilotnet, save_model
        try:
            save_model(build_pilotnet(), {path!r})
        except OSError as exc:
            print("refused:", exc)
            sys.exit(3)
    """)
    assert proc.returncode == 3, proc.stderr[-2000:]
    back = load_model(path)  # on a non-atomic save this is a torn zip
    for a, b in zip(good.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from train.simdata import expert_dataset

    out = str(tmp_path_factory.mktemp("prepared"))
    expert_dataset(out, "luigi", 160, size=(66, 200), seed=2, progress=False)
    return out


def _log(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _iterations(path) -> int:
    from train.model import load_model

    return int(load_model(path, compile=True).optimizer.iterations.numpy())


def test_fit_survives_a_failed_epoch_write_and_resumes_consistently(small_data, tmp_path):
    from train.fit import train

    out = str(tmp_path / "m.keras")
    res = train(small_data, out, epochs=1, batch_size=32, seed=0, progress=False, plots=False)
    run = res["run_dir"]
    last = os.path.join(run, "last.keras")
    steps = _iterations(last)
    assert steps > 0 and len(_log(run)) == 1
    before = {p: open(p, "rb").read() for p in (out, last)}

    # epoch 2 cannot write its model files: the run fails, the files stay the epoch-1 ones
    proc = run_limited(f"""
        from train.fit import train
        try:
            train({small_data!r}, {out!r}, epochs=2, batch_size=32, seed=0, resume=True, progress=False,
                  plots=False)
        except OSError as exc:
            print("failed:", exc)
            sys.exit(3)
    """)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    for p, data in before.items():
        assert open(p, "rb").read() == data, f"{p} changed after a failed write"
    assert len(_log(run)) == 1, "no row for an epoch whose checkpoint was not written"
    assert leftovers(run) == [] and leftovers(tmp_path) == []

    # the resume continues from epoch 2: rows and last.keras agree (no epoch twice, none skipped)
    res2 = train(small_data, out, epochs=2, batch_size=32, seed=0, resume=True, progress=False, plots=False)
    assert [int(r["epoch"]) for r in _log(run)] == [0, 1] and res2["epochs"] == 2
    assert _iterations(last) == 2 * steps


def test_early_stopping_resumes_its_count():
    from train.fit import ResumableEarlyStopping
    from train.model import build_pilotnet

    model = build_pilotnet()
    logged = [0.5, 0.4, 0.45, 0.46]  # best at epoch 1, then two epochs without improvement
    es = ResumableEarlyStopping(patience=3, val_losses=logged)
    es.set_model(model)
    es.on_train_begin()
    assert es.best == 0.4 and es.best_epoch == 1 and es.wait == 2 and not es.exhausted
    model.stop_training = False
    es.on_epoch_end(4, {"val_loss": 0.47})  # the third epoch without improvement: stop
    assert model.stop_training

    model.stop_training = False
    es = ResumableEarlyStopping(patience=3, val_losses=logged)
    es.set_model(model)
    es.on_train_begin()
    es.on_epoch_end(4, {"val_loss": 0.3})  # an improvement resets the count
    assert not model.stop_training and es.wait == 0 and es.best == 0.3
    assert ResumableEarlyStopping(patience=2, val_losses=logged).exhausted
