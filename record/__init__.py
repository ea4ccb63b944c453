"""Recorders: screen (mss) + gamepad (inputs), and the kartsim source.

``python -m record --help`` for the command line; the pieces are reusable:
:class:`record.gamepad.Gamepad` (drive's manual override reads it too),
:class:`record.clock.Ticker`, :class:`record.writer.FrameWriter`.
"""
