"""KartPilot's drive server: the model (or a person) answers the game's input polls.

mupen64plus-input-bot protocol (GET: the server captures the screen) and the
project's plugin protocol (POST: the frame is in the body), served by waitress.
Modes ai / human / shadow plus LB override; overrides become corrections
sessions; human mode can record the exact frames the plugin posts. ``/`` is a
live dashboard. Start it with ``python -m drive --model M.keras``.
"""
