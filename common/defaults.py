"""Defaults more than one stage uses, each written once (the Makefile's variables agree with these).

``MODEL``: where ``train`` writes the cloned PilotNet and where ``train evaluate``,
``drive`` and ``train.finetune`` look for it. ``DRIVE_PORT``: the drive server's
TCP port, which the C plugin (plugin_c, its own default) and the simulator client
poll. ``HELD_OUT``: the kartsim track kept out of training, the generalisation
test (``envs.kartsim.HELD_OUT`` is this).
"""

MODEL = "data/models/pilotnet.keras"
DRIVE_PORT = 8082
HELD_OUT = "twisty"
