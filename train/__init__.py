"""Behavioral cloning: PilotNet trained on recorded (or expert) driving, judged by driving.

    model.py     build_pilotnet, save_model, load_model (safe mode + transform check)
    policy.py    Policy: compiled, warmed, thread-safe batched inference
    data.py      tf.data over prepare's memory-mapped arrays (shuffle, augment, prefetch)
    fit.py       the training run and its callbacks (best .keras, early stop, TB, CSV, --resume)
    evaluate.py  closed-loop laps in kartsim: lap times, falls, autonomy, GIF + trace
    plots.py     learning curves, predicted vs recorded steering
    simdata.py   kartsim expert demos straight to arrays, with DART noise injection
    finetune/    PPO fine-tuning (separate; see its own docs)

Kept import-free on purpose: ``import train.finetune`` must not pull TensorFlow
in through this package; import ``train.model`` / ``train.policy`` explicitly.
"""
