"""Fixtures shared by the tests (tests/) and the benchmarks (bench/): one home for each.

- ``testing.emulator``: the GPL test ROM, building the plugin, running mupen64plus headless
- ``testing.plugin_server``: HTTP servers the C plugin polls (misbehaving on purpose; a fast one)
- ``testing.display``: a private Xvfb display and the animated test window on it
- ``testing.testwindow``: the animated window itself (``python -m testing.testwindow``)
- ``testing.sessions``: synthetic sessions written through the real SessionWriter
- ``testing.models``: the tiny PilotNet and a PilotNet that answers one constant action
- ``testing.drive``: the drive app on a free port, frames that carry their own index
- ``testing.ray_cluster``: a two-node Ray cluster on loopback alone, in a network namespace of its own,
  and a ``train.finetune --ray`` run through it (``python -m testing.ray_cluster``)
- ``testing.netcheck``: the TCP sockets of a process tree, and those off loopback

Product stages never import this package; test modules import from here, not from each other.
"""
