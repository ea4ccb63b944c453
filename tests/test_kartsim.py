"""kartsim: env contract, determinism, race logic, falls, track files, vector env, rendering."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs.kartsim as ks
from common.frames import to_model_input
from envs.kartsim import kart as K
from envs.kartsim import physics as P

GAS = np.array([0, 0, 1, 0, 0], np.float32)
REVERSE = np.array([0, 0, 0, 1, 0], np.float32)


@pytest.mark.parametrize("track", ks.TRACKS)
def test_env_checker(track):
    env = ks.make(track, size=(66, 200), seed=0)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert obs.shape == (66, 200, 3) and obs.dtype == np.uint8
    for key in ("progress", "lap", "lap_times", "race_time", "speed", "surface", "falls", "t"):
        assert key in info
    assert ks.make(track).observation_space.shape == (240, 320, 3)


def test_registered_ids():
    import gymnasium as gym

    env = gym.make("KartSim-Twisty-v0", size=(66, 200))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (66, 200, 3)
    assert env.unwrapped.expert_action().shape == (5,)
    vec = gym.make_vec("KartSim-Luigi-v0", num_envs=2, vectorization_mode="vector_entry_point", size=(66, 200))
    assert isinstance(vec.unwrapped, ks.VecKartSim)
    assert vec.reset(seed=0)[0].shape == (2, 66, 200, 3)


def _rollout(env, seed, steps=90):
    rng = np.random.default_rng(123)
    obs, _ = env.reset(seed=seed)
    frames, rewards, infos = [obs], [], []
    for _ in range(steps):
        act = rng.uniform(-1, 1, 5).astype(np.float32)
        act[2] = 1.0
        obs, r, _, _, info = env.step(act)
        frames.append(obs)
        rewards.append(r)
        infos.append(info)
    return np.stack(frames), np.array(rewards), infos


def test_deterministic_for_a_seed():
    a = _rollout(ks.make("luigi", size=(66, 200)), seed=7)
    b = _rollout(ks.make("luigi", size=(66, 200)), seed=7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    c = _rollout(ks.make("luigi", size=(66, 200)), seed=8)
    assert not np.array_equal(a[0][0], c[0][0])  # the seed moves the start


def _drive(env, action, seconds):
    info = None
    for _ in range(int(seconds * K.FPS)):
        _, _, _, _, info = env.step(action)
    return info


def test_reversing_over_the_line_does_not_count_a_lap():
    env = ks.make("luigi", size=(66, 200), seed=0)
    env.reset()
    info = _drive(env, REVERSE, 4.0)  # backwards over the start/finish line
    assert info["progress"] == 0.0 and info["lap"] == 0
    info = _drive(env, GAS, 4.0)  # and forwards over it again
    assert info["lap"] == 0 and info["lap_times"] == []
    assert info["progress"] < 0.1


def test_cutting_across_does_not_count_a_lap():
    env = ks.make("luigi", size=(66, 200), seed=0)
    env.reset()
    _drive(env, GAS, 2.0)
    sim, t = env.unwrapped.sim, env.unwrapped.track
    before = sim.info(0)["progress"]
    # a shortcut: appear just before the finish line (checkpoints skipped), keep the speed
    idx = int((t.length - 12.0) / t.ds)
    v = sim.fs[0, P.V]
    P.place(sim.fs, sim.ist, 0, idx, t.xy, t.heading)
    sim.fs[0, P.V] = v
    total = 0.0
    for _ in range(int(2.0 * K.FPS)):
        _, r, _, _, info = env.step(GAS)
        total += r
    assert info["lap"] == 0
    assert abs(info["progress"] - before) < 0.05  # progress did not jump with the shortcut
    assert total < 5.0


def test_rainbow_fall_and_respawn_at_last_checkpoint():
    env = ks.make("rainbow", size=(66, 200), seed=0)
    env.reset()
    sim, t = env.unwrapped.sim, env.unwrapped.track
    steer_off = np.array([1.0, 0, 1, 0, 0], np.float32)
    seen, t_fall, rewards = [], None, []
    for _ in range(int(6 * K.FPS)):
        _, r, _, _, info = env.step(steer_off if info_falls(sim) == 0 else GAS)
        seen.append(info["surface"])
        rewards.append(r)
        if info["falls"] == 1 and t_fall is None:
            t_fall = info["t"]
        if t_fall is not None and info["surface"] == "road":
            break
    assert info["falls"] == 1 and "falling" in seen and info["surface"] == "road"
    assert min(rewards) <= ks.RewardConfig().fall  # the fall penalty was paid
    # back on the centreline at the last checkpoint passed, after Lakitu's delay
    cp = sim.ist[0, P.LASTCP]
    assert np.hypot(*(sim.fs[0, [P.X, P.Y]] - t.xy[t.cp_idx[cp]])) < 2.0
    assert info["t"] - t_fall >= K.FALL_TIME + K.RESPAWN_HOLD - 0.05


def info_falls(sim):
    return int(sim.ist[0, P.FALLS])


def _write(tmp_path, name, spec):
    p = tmp_path / name
    p.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return p


SQUARE = [[0, 0, 10], [100, 0, 10], [100, 100, 10], [0, 100, 10]]


@pytest.mark.parametrize("spec,field", [
    ("{not json", "not valid JSON"),
    ({"surface": {}}, "'points'"),
    ({"points": SQUARE[:3]}, "'points'"),
    ({"points": [[0, 0, 10], [100, 0, 10], "x", [0, 100, 10]]}, "'points[2]'"),
    ({"points": [[0, 0, 10], [100, 0, -3], [100, 100, 10], [0, 100, 10]]}, "'points[1][2]'"),
    ({"points": SQUARE, "surface": {"offroad": "lava"}}, "'surface.offroad'"),
    ({"points": SQUARE, "surface": {"offroad_speed": 2}}, "'surface.offroad_speed'"),
    ({"points": SQUARE, "theme": "moon"}, "'theme'"),
    ({"points": [[0, 0, 10], [100, 100, 10], [100, 0, 10], [0, 100, 10]]}, "'points"),  # figure eight
])
def test_track_file_errors_name_file_and_field(tmp_path, spec, field):
    path = _write(tmp_path, "bad.json", spec)
    with pytest.raises(ks.TrackError) as exc:
        ks.load(str(path))
    assert str(path) in str(exc.value) and field in str(exc.value)


def test_a_track_that_crosses_itself_is_refused_where_it_crosses(tmp_path):
    """A lemniscate (a figure eight with gentle turns): refused for the overlap, near the crossing's
    control points, while the same loop as an ellipse loads."""
    ts = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
    eight = [[300 + 240 * np.cos(t), 300 + 120 * np.sin(2 * t), 10] for t in ts]
    path = _write(tmp_path, "eight.json", {"points": eight})
    with pytest.raises(ks.TrackError, match="overlaps itself near points") as exc:
        ks.load(str(path))
    named = [int(k) for k in re.findall(r"points\[(\d+)\]", str(exc.value))]
    assert len(named) == 2 and all(k % 12 in (5, 6, 7) for k in named), str(exc.value)  # t near pi/2, 3pi/2
    oval = [[300 + 240 * np.cos(t), 300 + 120 * np.sin(t), 10] for t in ts]
    assert ks.load(str(_write(tmp_path, "oval.json", {"points": oval}))).length > 0


def test_user_track_file_loads_and_cli_reports_errors(tmp_path):
    good = _write(tmp_path, "mine.json", {"points": [[x * 1.5, y * 1.5, w] for x, y, w in SQUARE]})
    env = ks.make(str(good), size=(66, 200), seed=0)
    obs, info = env.reset()
    assert info["surface"] == "road"
    bad = _write(tmp_path, "broken.json", {"points": "nope"})
    res = subprocess.run([sys.executable, "-m", "envs.kartsim", "expert", "--track", str(bad), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "broken.json" in res.stderr and "'points'" in res.stderr


def test_vector_env_equals_single_envs_step_for_step():
    n, seed, steps = 3, 11, 75
    kw = {"size": (66, 200), "max_time_s": 1.0}  # short episodes: autoreset happens twice
    vec = ks.VecKartSim(n, "rainbow", seed=seed, **kw)
    singles = [ks.make("rainbow", seed=seed + i, **kw) for i in range(n)]
    vobs, vinfo = vec.reset()
    sobs = [e.reset()[0] for e in singles]
    assert np.array_equal(vobs, np.stack(sobs))
    rng = np.random.default_rng(0)
    done = [False] * n
    resets = 0
    for _ in range(steps):
        acts = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
        acts[:, 2] = 1.0
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(acts)
        for i, env in enumerate(singles):
            if done[i]:  # next-step autoreset
                obs, _ = env.reset()
                r, term, trunc, info = 0.0, False, False, env.unwrapped.sim.info(0)
                resets += 1
            else:
                obs, r, term, trunc, info = env.step(acts[i])
            done[i] = term or trunc
            assert np.array_equal(vobs[i], obs)
            assert vrew[i] == pytest.approx(r, abs=1e-12) and vterm[i] == term and vtrunc[i] == trunc
            for key in ("progress", "lap", "speed", "falls", "t"):
                assert vinfo[key][i] == info[key], key
            assert vinfo["surface"][i] == info["surface"]
    assert resets >= n
    exp = vec.expert_actions()
    assert exp.shape == (n, 5)
    assert np.allclose(exp[0], singles[0].unwrapped.expert_action())


def test_vector_env_skipped_renders_and_state_round_trip():
    """render=False changes nothing but the drawing; get_state/set_state replays the same future."""
    kw = {"size": (66, 200), "max_time_s": 1.0}
    a, b = ks.VecKartSim(2, "rainbow", seed=5, **kw), ks.VecKartSim(2, "rainbow", seed=5, **kw)
    a.reset(), b.reset()
    rng = np.random.default_rng(1)
    acts = [np.clip(rng.normal(0, 0.5, (2, 5)), -1, 1).astype(np.float32) for _ in range(60)]
    for act in acts:
        act[:, 2] = 1.0
    for t, act in enumerate(acts[:40]):
        oa, ra, *_ = a.step(act)
        ob, rb, *_ = b.step(act, render=t % 4 == 3)
        assert (ob is None) == (t % 4 != 3)
        assert np.array_equal(ra, rb)
    assert np.array_equal(oa, ob) and np.array_equal(a.observe(), oa)
    saved = a.get_state()
    first = [a.step(act) for act in acts[40:]]
    c = ks.VecKartSim(2, "rainbow", seed=99, **kw)  # another seed: everything must come from the state
    c.reset()
    c.set_state(saved)
    for act, (obs, rew, term, trunc, _) in zip(acts[40:], first, strict=True):
        o2, r2, te2, tr2, _ = c.step(act)
        assert np.array_equal(obs, o2) and np.array_equal(rew, r2)
        assert np.array_equal(term, te2) and np.array_equal(trunc, tr2)
    with pytest.raises(ValueError, match="fs"):
        ks.VecKartSim(3, "rainbow", **kw).set_state(saved)


def test_set_reward_changes_the_weights_from_the_next_step_on():
    """The same state stepped twice: after ``set_reward`` with the speed term on, each kart earns
    v / VMAX more per step than before, on one track and on a multi-track batch alike."""
    kw = {"size": (66, 200), "max_time_s": 5.0}
    for vec in (ks.VecKartSim(2, "rainbow", seed=3, **kw), ks.VecKartSim(2, None, tracks=["rainbow", "luigi"],
                                                                         seed=3, **kw)):
        vec.reset()
        gas = np.tile(GAS, (2, 1))
        for _ in range(30):
            vec.step(gas, render=False)
        saved = vec.get_state()
        _, plain, *_ = vec.step(gas, render=False)
        v = vec.sim.fs[:, P.V].copy()
        assert (v > 0).all()
        vec.set_state(saved)
        vec.sim.set_reward({"speed": 1.0})
        _, shaped, *_ = vec.step(gas, render=False)
        np.testing.assert_allclose(shaped - plain, v / K.VMAX, rtol=1e-9)
        vec.close()


def test_model_size_render_matches_cropped_full_render():
    full = ks.make("luigi", seed=3)
    small = ks.make("luigi", size=(66, 200), seed=3)
    a, _ = full.reset()
    b, _ = small.reset()
    for _ in range(45):
        a, *_ = full.step(full.unwrapped.expert_action())
        b, *_ = small.step(small.unwrapped.expert_action())
    ref = to_model_input(a).astype(np.int16)
    assert b.shape == ref.shape
    assert np.abs(ref - b).mean() < 12.0
    # the same picture: row and column colour profiles agree closely
    assert np.abs(ref.mean(1) - b.mean(1)).mean() < 6.0
    assert np.abs(ref.mean(0) - b.mean(0)).mean() < 6.0


def test_views_show_road_offroad_and_void_in_distinct_colours():
    from envs.kartsim.render import Theme
    from envs.kartsim.texture import P_OFF, P_ROAD, P_VOID

    for theme, other in (("meadow", P_OFF), ("desert", P_OFF), ("space", P_VOID)):
        pal = Theme(theme).ground[0].astype(int)
        road = pal[P_ROAD] if theme != "space" else pal[32]
        assert np.abs(road - pal[other]).sum() > 120, theme


def test_expert_laps_reward_and_lower_bound():
    from envs.kartsim.expert import run_expert

    out = run_expert("twisty", laps=1)
    assert out["laps"] == 1 and out["falls"] == 0 and out["finished"]
    assert out["best_lap_s"] >= out["lower_bound_s"] > 0
    # one lap of progress is worth 100 with the default reward
    env = ks.make("twisty", size=(66, 200), laps=1, seed=0)
    env.reset()
    total, term = 0.0, False
    while not term:
        _, r, term, trunc, info = env.step(env.unwrapped.expert_action())
        total += r
        assert not trunc
    assert info["lap"] == 1 and total == pytest.approx(100.0, abs=1.0)
    assert info["mini_turbos"] >= 1  # the expert drifts the hairpins and fires the boost


def test_cli_tracks_json():
    res = subprocess.run([sys.executable, "-m", "envs.kartsim", "tracks", "--json"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    names = [t["name"] for t in out["tracks"]]
    assert names == list(ks.TRACKS)
    for t in out["tracks"]:
        assert t["length"] > 100 and t["lower_bound_s"] > 0 and t["width"] > 0


def test_play_window_runs_headless():
    env = {**__import__("os").environ, "SDL_VIDEODRIVER": "dummy"}
    res = subprocess.run([sys.executable, "-m", "envs.kartsim", "play", "--track", "twisty", "--frames", "20",
                          "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["track"] == "twisty" and out["race_time"] > 0.5


def test_async_vector_env_over_single_envs():
    import gymnasium as gym

    vec = gym.vector.AsyncVectorEnv([lambda: ks.make("luigi", size=(66, 200)) for _ in range(2)])
    try:
        obs, _ = vec.reset(seed=0)
        obs, rew, term, trunc, info = vec.step(np.tile(GAS, (2, 1)))
        assert obs.shape == (2, 66, 200, 3) and rew.shape == (2,) and info["speed"].shape == (2,)
    finally:
        vec.close()


def test_handling_drift_boost_offroad_and_reverse():
    env = ks.make("luigi", size=(66, 200), seed=0)
    env.reset()
    sim = env.unwrapped.sim
    info = _drive(env, GAS, 3.0)
    assert 15.0 < info["speed"] <= K.VMAX
    # R with the stick held left: hop, land in a left drift, charge, release -> boost above top speed
    sim.fs[0, P.TH] -= 0.3  # aim right first, so the left drift stays on the road
    info = _drive(env, np.array([-0.8, 0, 1, 0, 1], np.float32), 0.2)
    assert sim.fs[0, P.HOP] > 0
    info = _drive(env, np.array([-0.8, 0, 1, 0, 1], np.float32), 0.1)
    assert info["drift"] == -1
    info = _drive(env, np.array([1.0, 0, 1, 0, 1], np.float32), 0.65)  # stick out: a wide drift
    assert info["drift"] == -1 and info["surface"] == "road"
    assert info["mini_turbos"] == 0  # charging is not firing
    _, _, _, _, info = env.step(GAS)
    assert info["boost"] and info["drift"] == 0 and info["mini_turbos"] == 1
    info = _drive(env, GAS, 0.3)
    assert info["speed"] > K.VMAX and info["surface"] == "road"
    # off-road (grass) caps the speed
    info = _drive(env, np.array([1.0, 0, 1, 0, 0], np.float32), 1.5)
    info = _drive(env, GAS, 2.0)
    assert info["surface"] == "offroad" and info["speed"] <= K.VMAX * env.unwrapped.track.offroad_speed + 1e-6
    # B brakes to a stop, then reverses
    info = _drive(env, REVERSE, 2.0)
    assert -K.REV_MAX <= info["speed"] < 0
    # NaN input is treated as neutral, not propagated
    _, _, _, _, info = env.step(np.full(5, np.nan, np.float32))
    assert np.isfinite(info["speed"])


def test_drift_hold_shaping_charges_each_frame_held_on_a_full_charge():
    """The same drift held well past its charge, with and without ``drift_hold``: the frames after
    the one on which the charge became full each cost the weight, and nothing else differs."""
    hop_left = np.array([-0.8, 0, 1, 0, 1], np.float32)
    wide = np.array([1.0, 0, 1, 0, 1], np.float32)  # stick out: a wide drift that stays on the road

    def drive(weight):
        env = ks.make("luigi", size=(66, 200), seed=0, reward={"drift_hold": weight})
        env.reset(seed=0)
        sim = env.unwrapped.sim
        _drive(env, GAS, 3.0)
        sim.fs[0, P.TH] -= 0.3
        rewards, full_before = [], []
        for a in [hop_left] * int(0.3 * K.FPS) + [wide] * int(1.0 * K.FPS):
            full_before.append(sim.ist[0, P.DDIR] != 0 and sim.fs[0, P.CHARGE] >= K.MT_CHARGE)
            rewards.append(env.step(a)[1])
        assert sim.ist[0, P.DDIR] == -1
        _, r, _, _, info = env.step(GAS)  # let go of R: the mini-turbo fires
        assert info["boost"] and info["mini_turbos"] == 1
        return np.array(rewards + [r]), np.array(full_before + [False])

    base, held = drive(0.0)
    shaped, _ = drive(-0.5)
    assert 5 <= held.sum() < len(held) - 10  # held a while on a full charge, after charging for longer
    np.testing.assert_allclose(shaped - base, np.where(held, -0.5, 0.0), atol=1e-12)


def test_edge_shaping_costs_frames_near_a_void_edge_and_nothing_on_grass():
    """The same drive off the road with and without ``edge``: on rainbow (void) each step differs by
    the weight x the closeness (0 at the margin, 1 at the edge), nothing while falling; on luigi
    (grass run-off) nothing differs even though the kart crosses the edge."""
    out = np.array([0.3, 0, 1, 0, 0], np.float32)  # gas with the stick to the right: off the road

    def drive(track, weight):
        env = ks.make(track, size=(66, 200), seed=0, reward={"edge": weight, "edge_margin": 1.5})
        env.reset(seed=0)
        sim = env.unwrapped.sim
        rewards, close, inside, surface = [], [], [], []
        for t in range(int(5 * K.FPS)):
            _, r, _, _, info = env.step(GAS if t < 2 * K.FPS else out)
            rewards.append(r)
            close.append(sim.edge_closeness()[0])
            inside.append(env.unwrapped.inside_edge())
            surface.append(info["surface"])
        return np.array(rewards), np.array(close), np.array(inside), np.array(surface), info

    base, close, inside, surface, info = drive("rainbow", 0.0)
    shaped, close2, _, _, _ = drive("rainbow", -0.5)
    assert info["falls"] == 1 and (surface == "falling").any()
    np.testing.assert_array_equal(close, close2)
    on_road = surface != "falling"
    # closeness is the share of the 1.5-unit margin used up, measured by inside_edge()
    np.testing.assert_allclose(close[on_road], np.clip((1.5 - inside[on_road]) / 1.5, 0, 1), atol=1e-12)
    assert (close[~on_road] == 0).all() and close[0] == 0 and (close > 0).sum() >= 3
    np.testing.assert_allclose(shaped - base, -0.5 * close, atol=1e-12)
    grass, gclose, ginside, gsurface, _ = drive("luigi", 0.0)
    assert (gsurface == "offroad").any() and (gclose > 0).any() and ginside.min() < 0
    np.testing.assert_array_equal(drive("luigi", -0.5)[0], grass)
    with pytest.raises(ValueError, match="edge_margin must be > 0"):
        ks.make("rainbow", reward={"edge": -0.5, "edge_margin": 0.0})


def test_drift_abort_shaping_charges_only_a_drift_given_up_short():
    """The same drive with and without ``drift_abort``: only the uncharged release differs, by the
    weight x the share of the charge missing; a drift held to its mini-turbo costs nothing."""
    hop_left = np.array([-0.8, 0, 1, 0, 1], np.float32)

    def drive(weight, hold_s):
        env = ks.make("luigi", size=(66, 200), seed=0, reward={"drift_abort": weight})
        env.reset(seed=0)
        sim = env.unwrapped.sim
        _drive(env, GAS, 3.0)
        sim.fs[0, P.TH] -= 0.3  # aim right first, so the left drift stays on the road
        rewards = [env.step(hop_left)[1] for _ in range(int(0.3 * K.FPS))]
        wide = np.array([1.0, 0, 1, 0, 1], np.float32)  # stick out: a wide drift that stays on the road
        rewards += [env.step(wide)[1] for _ in range(int(hold_s * K.FPS))]
        assert sim.ist[0, P.DDIR] == -1
        charge = float(sim.fs[0, P.CHARGE])
        _, r, _, _, info = env.step(GAS)  # let go of R
        return np.array(rewards + [r]), charge, info

    base, charge, info = drive(0.0, 0.2)
    shaped, _, _ = drive(-2.0, 0.2)
    assert 0.0 < charge < K.MT_CHARGE and not info["boost"]
    np.testing.assert_allclose(shaped[:-1], base[:-1])
    assert shaped[-1] - base[-1] == pytest.approx(-2.0 * (1.0 - charge / K.MT_CHARGE))
    base, charge, info = drive(0.0, 0.65)
    shaped, _, _ = drive(-2.0, 0.65)
    assert charge >= K.MT_CHARGE and info["boost"] and info["mini_turbos"] == 1
    np.testing.assert_allclose(shaped, base)


def test_small_batches_render_on_the_calling_thread_pixel_for_pixel():
    """MultiTrackBatch draws one kart per call: those go to the serial kernel (the parallel one,
    started tens of thousands of times on 66 rows, slowed down call by call); both draw the same."""
    from envs.kartsim import render as R

    vec = ks.VecKartSim(6, size=(66, 200), seed=0, track="rainbow")
    vec.reset()
    for _ in range(40):
        vec.step(vec.expert_actions(), render=False)
    rd, t = vec.sim.renderer, vec.sim.track
    args = (rd.cameras(vec.sim.fs, vec.sim.ist), t.tex, t.origin[0], t.origin[1], rd.inv_cell,
            rd.theme.default_ground, rd.theme.ground, rd.theme.ground32, rd.row_v, rd.col_u, rd.row_d,
            rd.row_fog, rd.col_l, rd.col_a, rd.theme.sky, rd.theme.sky_pal, R.SPRITES, rd.rect)
    par, ser = (np.zeros((6, 66, 200, 3), np.uint8) for _ in range(2))
    R.render_batch(par, *args)
    R.render_serial(ser, *args)
    assert par.std() > 10 and (par == ser).all()
    assert 66 * 200 < R.SERIAL_PIXELS < 24 * 66 * 200  # one kart serial, a 24-env batch in parallel
    vec.close()
