"""Defaults more than one stage uses, each written once (the Makefile's variables agree with these).

``MODEL``: where ``train`` writes the cloned PilotNet and where ``train evaluate``,
``drive`` and ``train.finetune`` look for it. ``DRIVE_PORT``: the drive server's
TCP port, which the C plugin (plugin_c, its own default) and the simulator client
poll. ``HELD_OUT``: the kartsim track kept out of training, the generalisation
test (``envs.kartsim.HELD_OUT`` is this). ``POST_FRAME_HW``: the size (rows,
columns) of the frames the C plugin posts to ``drive``: the N64's own 320x240
framebuffer, box-downscaled in C from the 640x480 window. After
``common.frames.to_model_input`` it differs from the 640x480 frame by under a
gray level on average (tests/test_frames.py), at a quarter of the bytes;
``bench.drive`` measures both sizes. ``EXPERT_MARGIN``: the share of the mean road
width that kartsim's scripted expert keeps its racing line from each edge (the
reference every lap-time ratio is measured against; ``train demos
--expert-margin`` and ``envs.kartsim expert --margin`` change it for a teacher).
``SECTORS``: how many equal stretches of the lap the split times cut a lap into
(``envs.kartsim.splits``; ``replay --sectors``, ``train evaluate --sectors``).
"""

MODEL = "data/models/pilotnet.keras"
DRIVE_PORT = 8082
HELD_OUT = "twisty"
POST_FRAME_HW = (240, 320)
EXPERT_MARGIN = 0.22
SECTORS = 10
