"""A fine-tuning run's logs: TensorBoard scalars and the CSV tables (``train.csv``, ``eval.csv``)."""

from __future__ import annotations

import csv
import io
import os
import re

from common import atomic


class RunLog:
    def __init__(self, out: str, tensorboard: bool = True):
        self.out, self.tensorboard = out, tensorboard
        self._tb = None

    def scalars(self, prefix: str, row: dict, step: int) -> None:
        """The row's numbers as TensorBoard scalars ``prefix/name`` at ``step`` (game frames); characters
        TensorBoard tags do not take (a track's ``gen:7:void``, a set's ``+``) become ``_``."""
        if not self.tensorboard:
            return
        import tensorflow as tf

        if self._tb is None:
            self._tb = tf.summary.create_file_writer(os.path.join(self.out, "tb"))
        with self._tb.as_default(step=step):
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("update", "frames"):
                    tf.summary.scalar(re.sub(r"[^A-Za-z0-9._/-]", "_", f"{prefix}/{k}"), v)
        self._tb.flush()

    def table(self, name: str, rows: list[dict]) -> None:
        """Replace ``OUT/name`` with all ``rows`` (atomically: the old table or the new one, never half)."""
        if not rows:
            return
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, keys)
        w.writeheader()
        w.writerows(rows)
        atomic.write_text(os.path.join(self.out, name), buf.getvalue())
