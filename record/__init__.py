"""Recorders: screen (mss) + gamepad (inputs), and the kartsim source.

``python -m record --help`` for the command line; the pieces are reusable:
:class:`record.clock.Ticker`. Sessions are written by :class:`dataset.sink.SessionSink`
(drive writes its sessions through it too). The gamepad (:class:`common.gamepad.Gamepad`)
and the screen capture (:class:`common.screen.ScreenCapture`) live in common/: drive uses them too.
"""
