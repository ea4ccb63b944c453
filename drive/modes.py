"""Who drives: the mode (ai / human / shadow) and the LB override, per poll.

Pure decision logic, no I/O, so it is tested directly:

* ``ai``: the model's action is sent; while LB is held the human's input is
  sent at once instead (an override) and those frames become corrections,
  except the first ``trim_s`` of each takeover (the person's reaction lag).
* ``human``: the gamepad is sent (plugin recording happens in this mode).
* ``shadow``: the gamepad is sent, the model runs and is logged/shown only.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("ai", "human", "shadow")


@dataclass(frozen=True)
class Decision:
    use_ai: bool  # answer with the model's action (else the human's)
    run_ai: bool  # run the model at all (ai, or shadow for the log)
    override: bool  # LB held in ai mode
    correction: bool  # save this frame as a correction (override, past the trim)
    driver: str  # session driver label of the answered action


class Override:
    """Tracks LB takeovers: when each began, how many there were."""

    def __init__(self, trim_s: float = 0.3):
        self.trim_s = float(trim_s)
        self.since: float | None = None
        self.takeovers = 0

    def update(self, held: bool, now: float) -> bool:
        """Feed the LB flag seen at ``now``; True once past the trim window."""
        if not held:
            self.since = None
            return False
        if self.since is None:
            self.since = now
            self.takeovers += 1
        return now - self.since >= self.trim_s


def decide(mode: str, lb_held: bool, past_trim: bool) -> Decision:
    """The decision for one poll of the human's port (other ports: ``decide(mode, False, False)``)."""
    if mode == "ai":
        if lb_held:
            return Decision(False, False, True, past_trim, "correction")
        return Decision(True, True, False, False, "model")
    if mode == "human":
        return Decision(False, False, False, False, "human")
    if mode == "shadow":
        return Decision(False, True, False, False, "human")
    raise ValueError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")


def next_mode(mode: str) -> str:
    """The gamepad's mode button cycles ai -> shadow -> human -> ai."""
    order = ("ai", "shadow", "human")
    return order[(order.index(mode) + 1) % len(order)]
