"""Recorders: screen (mss) + gamepad (inputs), and the kartsim source.

``python -m record --help`` for the command line; the pieces are reusable:
:class:`record.gamepad.Gamepad` (drive's manual override reads it too),
:class:`record.clock.Ticker`. Sessions are written by :class:`dataset.sink.SessionSink`
(drive writes its sessions through it too).
"""
