"""Recorders: screen (mss) + gamepad (inputs), and the kartsim source.

``python -m record --help`` for the command line; the pieces are reusable:
:class:`record.clock.Ticker`, :class:`record.writer.FrameWriter`. The gamepad
(:class:`common.gamepad.Gamepad`) and the screen capture
(:class:`common.screen.ScreenCapture`) live in common/: drive uses them too.
"""
