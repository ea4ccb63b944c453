"""The human's gamepad at drive time: record.gamepad.Gamepad plus a mode button.

Reading and mapping the pad is record.gamepad's job (one reader in the
project); this subclass only watches one extra button in the same event
stream: pressing Back/Select (``BTN_SELECT``) cycles the drive mode
ai -> shadow -> human. LB (the mapping's ``override``) is read as ``.lb``.
"""

from __future__ import annotations

from collections.abc import Callable

from record.gamepad import Gamepad, NoGamepad

MODE_BUTTON = "BTN_SELECT"

__all__ = ["DriveGamepad", "NoGamepad", "open_gamepad", "MODE_BUTTON"]


class DriveGamepad(Gamepad):
    """A Gamepad whose Back/Select press calls ``on_mode_button()``."""

    def __init__(self, device=None, mapping=None, on_mode_button: Callable[[], object] | None = None):
        super().__init__(device, mapping)
        self.on_mode_button = on_mode_button
        self.mode_presses = 0

    def apply(self, events) -> None:
        for ev in events:
            if ev.code == MODE_BUTTON and ev.state == 1:  # press, not release or autorepeat (2)
                self.mode_presses += 1
                if self.on_mode_button is not None:
                    self.on_mode_button()
        super().apply(events)

    def read(self):
        """(action vector, LB held) for Pilot."""
        return self.state(), self.lb


def open_gamepad(spec: str, mapping=None) -> DriveGamepad | None:
    """``spec``: 'none', 'auto' (first gamepad, None when there is none) or a device/file path."""
    if spec == "none":
        return None
    if spec == "auto":
        try:
            return DriveGamepad(None, mapping).start()
        except NoGamepad:
            return None
    return DriveGamepad(spec, mapping).start()
