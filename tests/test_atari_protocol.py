"""The Atari protocol of the scripts (envpool) against an independent reference: ale-py + gymnasium's own
`AtariPreprocessing` (frame skip 4 with max-pool over the last two frames, 84 x 84 greyscale by OpenCV's INTER_AREA)
and `FrameStackObservation` (stack of 4).

One fixed action sequence is played in both. envpool's `noop_max=1` plays one NOOP frame after every reset, so the
reference gets `noop_max=1` too (it then plays exactly one NOOP). Everything must then be equal: raw rewards, game
overs, truncations, the lives counter and every observation stack, bit for bit, except the newest frame of a game-over
step (at game over envpool stops the frame skip and keeps the newest frame; gymnasium's wrapper breaks out before
saving it and max-pools the two frames it saved earlier). docs/evaluate.md documents both deviations.
"""

import importlib

import ale_py
import envpool
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

eaude = importlib.import_module("eaudedqn_atari_jax")
gym.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


def scripts_env(game: str, sticky: float, seed: int) -> object:
    """The scripts' env (their MACHADO_PROTOCOL), sticky actions as asked."""
    return envpool.make(
        f"{game}-v5",
        env_type="gymnasium",
        num_envs=1,
        seed=seed,
        **{**eaude.MACHADO_PROTOCOL, "repeat_action_probability": sticky},
    )


def reference_env(game: str, sticky: float, seed: int, noop_max: int = 1) -> gym.Env:
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,  # AtariPreprocessing skips the frames
        repeat_action_probability=sticky,
        full_action_space=False,
        max_num_frames_per_episode=108_000,
        disable_env_checker=True,
    )
    # envpool seeds its ALE with the env's seed itself; gymnasium's reset(seed) would derive another ALE seed
    env.unwrapped.ale.setInt("random_seed", seed)
    env.unwrapped.load_game()
    env = AtariPreprocessing(
        env, noop_max=noop_max, frame_skip=4, screen_size=84, terminal_on_life_loss=False, grayscale_obs=True
    )
    return FrameStackObservation(env, 4)


def play(game: str, steps: int, sticky: float = 0.0, seed: int = 7, noop_max: int = 1) -> dict[str, np.ndarray]:
    """Both envs driven by one fixed action sequence; one row per agent step of the reference."""
    ours, ref = scripts_env(game, sticky, seed), reference_env(game, sticky, seed, noop_max)
    assert ours.action_space.n == ref.action_space.n
    actions = np.random.default_rng(0).integers(ours.action_space.n, size=steps)
    obs, info = ours.reset()
    ref_obs, ref_info = ref.reset()
    rows: dict[str, list] = {key: [] for key in ("reward", "terminated", "truncated", "lives", "same", "older_same")}

    def record(ours_step: tuple, ref_step: tuple) -> None:
        (obs, _, terminated, truncated, info), (ref_obs, ref_reward, ref_terminated, ref_truncated, ref_info) = (
            ours_step,
            ref_step,
        )
        rows["reward"].append((float(info["reward"][0]), float(ref_reward)))
        rows["terminated"].append((bool(terminated[0]), bool(ref_terminated)))
        rows["truncated"].append((bool(truncated[0]), bool(ref_truncated)))
        rows["lives"].append((int(info["lives"][0]), int(ref_info["lives"])))
        rows["same"].append(np.array_equal(obs[0], ref_obs))
        rows["older_same"].append(np.array_equal(obs[0, :-1], ref_obs[:-1]))

    record((obs, None, [False], [False], {**info, "reward": [0.0]}), (ref_obs, 0.0, False, False, ref_info))
    for action in actions:
        step = ours.step(np.array([action]))
        if rows["terminated"][-1][0] or rows["truncated"][-1][0]:
            # envpool's autoreset step ignores the action and returns the reset observation; the reference resets
            ref_obs, ref_info = ref.reset()
            record(step, (ref_obs, 0.0, False, False, ref_info))
        else:
            record(step, ref.step(int(action)))
    ours.close()
    ref.close()
    return {key: np.array(value) for key, value in rows.items()}


def assert_same_protocol(rows: dict[str, np.ndarray]) -> None:
    for key in ("reward", "terminated", "truncated", "lives"):
        ours, ref = rows[key][:, 0], rows[key][:, 1]
        assert np.array_equal(ours, ref), f"{key} differs first at step {np.flatnonzero(ours != ref)[0]}"
    game_over = rows["terminated"][:, 0]
    different = np.flatnonzero(~rows["same"])
    assert set(different) <= set(np.flatnonzero(game_over)), f"frames differ at steps {different[:10]}"
    assert rows["older_same"].all(), "a frame other than the newest of a game-over step differs"


def test_every_atari_script_uses_the_same_protocol() -> None:
    for name in ("polyprune_dqn_atari_jax", "eaudecql_atari_jax", "polyprune_cql_atari_jax"):
        assert importlib.import_module(name).MACHADO_PROTOCOL == eaude.MACHADO_PROTOCOL, name
    assert eaude.MACHADO_PROTOCOL["noop_max"] == 1 and not eaude.MACHADO_PROTOCOL["episodic_life"]


def test_pong_is_bit_identical_to_ale_py_and_atari_preprocessing() -> None:
    rows = play("Pong", 2000)
    assert_same_protocol(rows)
    assert rows["terminated"][:, 0].sum() >= 1  # a whole game, and the reset after it, are compared
    assert (rows["reward"][:, 0] != 0).sum() > 20


def test_breakout_matches_and_a_life_loss_does_not_end_the_episode() -> None:
    rows = play("Breakout", 2000)
    assert_same_protocol(rows)
    lives, game_over = rows["lives"][:, 0], rows["terminated"][:, 0]
    assert game_over.sum() >= 3
    lost_a_life = np.flatnonzero(np.diff(lives) < 0) + 1
    assert len(lost_a_life) > 3 * game_over.sum()  # Breakout has 5 lives: most life losses are not episode ends
    assert not game_over[lost_a_life[lives[lost_a_life] > 0]].any()


def test_sticky_actions_match_when_the_ale_seed_is_envpools_seed() -> None:
    # the ALE random stream draws the sticky repeats; it runs on across resets (several games are played here)
    rows = play("Breakout", 2000, sticky=0.25, seed=12345)
    assert_same_protocol(rows)
    assert rows["terminated"][:, 0].sum() >= 3


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_envpool_plays_one_noop_frame_after_reset(game: str) -> None:
    """Strict Machado has no NOOP after reset: a reference without it is one frame out of phase, and drifts."""
    assert_same_protocol(play(game, 100))
    rows = play(game, 100, noop_max=0)
    assert not rows["same"].all()
