"""The recurrent path of PPO on RLlib 2.60's new API stack, checked on real batches, for the RIM policy and for
RLlib's own LSTM (issue 16, item 2). One test per bug RLlib's recurrent path has had:

- ray#21392: the state carried on was the one after a sequence's zero padding, not after its last real step;
- ray#2992: the loss was averaged over zero-padded timesteps;
- PR#47401: the state connector cut sequences every 20 steps whatever max_seq_len said;
- ray#15483: a new episode did not restart from the initial state.

Real batches: a PPO algorithm built by rllib_models.ppo.build_ppo_config (tiny models, hidden 16), episodes
sampled by its local env runner (4 vectorised envs whose episodes have random lengths of 2 to 40 steps, so they
end at different times, are often shorter than max_seq_len and rarely a multiple of it), then turned into the
learner's train batch by the learner's own connector pipeline (the call Learner.update makes). The expected
states are recomputed here by running the env runner's module one step at a time over each episode's
observations. docs/rl_correctness.md has what each test found.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from rllib_models.envs import RepeatPrevious
from rllib_models.ppo import PPOBase, build_ppo_config
from rllib_models.rollout import map_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VAR_ENV = "rims_test_variable_length_repeat"
NUM_ENVS = 4
MIN_LEN, MAX_LEN = 2, 40
MODELS = {
    "rims": {"kind": "rims", "hidden_size": 16, "num_units": 4, "top_k": 2, "input_attention": {"dropout": 0.0},
             "comm": {"dropout": 0.0}},
    "lstm": {"kind": "lstm", "hidden_size": 16},
}
ATOL = 1e-5  # a batch-of-4 forward against a batch-of-1 replay: float32 rounding only


class VariableLengthRepeat(RepeatPrevious):
    """RepeatPrevious whose episode length is drawn at every reset, uniformly in [min_len, max_len]."""

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        cfg = dict(env_config or {})
        self.min_len, self.max_len = int(cfg.pop("min_len", MIN_LEN)), int(cfg.pop("max_len", MAX_LEN))
        super().__init__(cfg)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        out = super().reset(seed=seed, options=options)
        self.episode_len = int(self.np_random.integers(self.min_len, self.max_len + 1))
        return out


class VariableLengthSettings(PPOBase):
    """PPO settings on VariableLengthRepeat (a task's settings model, as PPOBase intends)."""

    def env_spec(self, train: bool) -> tuple[str, dict[str, Any]]:
        return VAR_ENV, {"num_tokens": 3}


@pytest.fixture(scope="module")
def algos():
    """build(kind, max_seq_len) -> a built PPO Algorithm (one per pair, cached; all stopped at the end)."""
    from ray.tune.registry import register_env

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the env runner and the learner run in this process: 2 threads oversubscribe
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    register_env(VAR_ENV, lambda cfg: VariableLengthRepeat(cfg))
    built: dict[tuple[str, int], Any] = {}

    def build(kind: str, max_seq_len: int) -> Any:
        if (kind, max_seq_len) not in built:
            settings = VariableLengthSettings(num_envs=NUM_ENVS, rollout_length=16, max_seq_len=max_seq_len,
                                              num_epochs=1, eval_episodes=0, anneal_lr=False)
            config = build_ppo_config(settings, MODELS[kind], lr=1e-3, minibatch_size=64, grad_clip=0.5,
                                      total_steps=10**6, seed=0)
            built[kind, max_seq_len] = config.build_algo()
        return built[kind, max_seq_len]

    yield build
    for algo in built.values():
        algo.stop()
    ray.shutdown()
    torch.set_num_threads(threads)


# ---- helpers -------------------------------------------------------------------------------------------------

def numpy_state(state: Any) -> Any:
    return map_state(lambda a: a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a), state)


def state_at(states: Any, t: int) -> Any:
    """Step t of a state stored per step ({k: (T, S, H)})."""
    return map_state(lambda a: np.asarray(a)[t], states)


def states_close(a: Any, b: Any, atol: float = ATOL) -> bool:
    a, b = numpy_state(a), numpy_state(b)
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def state_distance(a: Any, b: Any) -> float:
    a, b = numpy_state(a), numpy_state(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@torch.no_grad()
def replay(module: Any, observations: np.ndarray, state0: Any) -> tuple[list[Any], np.ndarray]:
    """Run module one step at a time over observations (T, D) from state0 (no batch dim), feeding each STATE_OUT
    back as the next STATE_IN. Returns the state after every step (T states) and the logits (T, A)."""
    state = map_state(lambda a: torch.as_tensor(np.asarray(a))[None], state0)  # batch of 1
    states, logits = [], []
    for o in observations:
        out = module.forward_inference({Columns.OBS: torch.as_tensor(o)[None, None], Columns.STATE_IN: state})
        state = out[Columns.STATE_OUT]
        states.append(map_state(lambda t: t[0].numpy(), state))
        logits.append(out[Columns.ACTION_DIST_INPUTS].reshape(-1).numpy())
    return states, np.stack(logits)


def sample(algo: Any, steps_per_env: int, reset: bool) -> list[Any]:
    """Episode chunks from the algorithm's local env runner (done episodes and cut ongoing ones)."""
    return algo.env_runner.sample(num_timesteps=steps_per_env * NUM_ENVS, explore=True, force_reset=reset)


def start_state(module: Any, chunk: Any) -> Any:
    """The state the chunk's first step starts from: the initial state for a new episode, else the last
    STATE_OUT of the previous chunk of the same episode (its lookback buffer)."""
    if chunk.t_started == 0:
        return numpy_state(module.get_initial_state())
    return chunk.get_extra_model_outputs(key=Columns.STATE_OUT, indices=-1, neg_index_as_lookback=True)


def learner_batch(algo: Any, chunks: list[Any]) -> tuple[Any, dict[str, Any], list[range]]:
    """(learner, the train batch of the default module, the batch rows of each chunk) for these chunks, built by
    the learner's own connector pipeline, as Learner.update does (on copies: the pipeline appends a bootstrap
    timestep to each chunk)."""
    learner = algo.learner_group._learner
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=copy.deepcopy(chunks),
                                       shared_data={}, metrics=learner.metrics)[DEFAULT_MODULE_ID]
    m = learner.module[DEFAULT_MODULE_ID].model_config["max_seq_len"]
    rows, r = [], 0
    for c in chunks:  # one extra (bootstrap) timestep per chunk, cut into max_seq_len rows
        n = math.ceil((len(c) + 1) / m)
        rows.append(range(r, r + n))
        r += n
    assert batch[Columns.OBS].shape[0] == r, "one row per max_seq_len slice of each chunk, in order"
    for c, rs in zip(chunks, rows, strict=True):  # the rows hold the chunk's observations: the mapping is right
        obs = c.get_observations()  # (len + 1, D): the bootstrap step repeats the last observation
        for j, row in enumerate(rs):
            k = int(batch[Columns.SEQ_LENS][row])
            assert np.array_equal(batch[Columns.OBS][row, :k].numpy(), obs[j * m:j * m + k])
            assert not batch[Columns.OBS][row, k:].any(), "zero padding after the real steps"
    return learner, batch, rows


def ppo_loss(learner: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The PPO torch learner's total loss on a train batch (its own compute_loss_for_module)."""
    module = learner.module[DEFAULT_MODULE_ID]
    with torch.no_grad():
        fwd = module.forward_train(batch)
        return learner.compute_loss_for_module(module_id=DEFAULT_MODULE_ID, batch=batch, fwd_out=fwd,
                                               config=learner.config.get_config_for_module(DEFAULT_MODULE_ID))


KINDS = pytest.mark.parametrize("kind", ["rims", "lstm"])


# ---- ray#21392 -----------------------------------------------------------------------------------------------

@KINDS
def test_state_carried_on_is_the_state_after_the_last_real_step(algos, kind):
    """ray#21392. The env runner carries each step's state into the next step and across sample() calls, and the
    learner's STATE_IN of every chunk after the first is the state after the previous chunk's last real step,
    all equal to a step-by-step replay of the episode. The learner's forward over the padded batch then gives the
    actor's logits at every real step (what PPO's ratio needs). RLlib 2.60 is right here, for both modules."""
    m = 5
    algo = algos(kind, m)
    module = algo.env_runner.module
    first, second = sample(algo, 30, reset=True), sample(algo, 30, reset=False)
    finals: dict[str, Any] = {}
    replays: dict[int, tuple[Any, list[Any]]] = {}
    for c in first + second:
        state0 = start_state(module, c)
        if c.t_started > 0:  # cut by the end of a sample() call: continues from its previous chunk's end
            assert states_close(state0, finals[c.id_]), "lookback state = the previous chunk's last state"
        states, logits = replay(module, c.get_observations()[:len(c) + 1], state0)  # + the bootstrap step
        stored = c.get_extra_model_outputs(key=Columns.STATE_OUT)
        for t in range(len(c)):
            assert states_close(state_at(stored, t), states[t]), f"{kind}: step {t} of a chunk of {len(c)}"
        assert np.allclose(c.get_extra_model_outputs(key=Columns.ACTION_DIST_INPUTS), logits[:len(c)], atol=ATOL)
        finals[c.id_] = states[len(c) - 1]
        replays[id(c)] = (state0, states)
    lengths = [len(c) for c in first + second if c.t_started == 0 and c.is_done]
    assert any(n < m for n in lengths) and any(n > m and n % m for n in lengths), lengths
    assert any(c.t_started > 0 for c in second), "some episode continues across sample() calls"

    learner, batch, rows = learner_batch(algo, second)
    for c, rs in zip(second, rows, strict=True):
        state0, states = replays[id(c)]
        for j, row in enumerate(rs):
            expected = state0 if j == 0 else states[j * m - 1]  # after real step j*m - 1 of the chunk
            assert states_close(map_state(lambda a, r=row: a[r], batch[Columns.STATE_IN]), expected), (kind, j)
    fwd = learner.module[DEFAULT_MODULE_ID].forward_train(batch)
    mask = batch[Columns.LOSS_MASK]
    assert torch.allclose(fwd[Columns.ACTION_DIST_INPUTS][mask], batch[Columns.ACTION_DIST_INPUTS][mask],
                          atol=ATOL), "the learner replays the actor's logits at every real step"


@pytest.mark.parametrize("kind", [
    "rims",
    pytest.param("lstm", marks=pytest.mark.xfail(strict=True, reason=(
        "ray#21392 at the module: RLlib 2.60's default LSTM module ignores SEQ_LENS, so the STATE_OUT of a "
        "training forward is the state after the zero padding (PPO does not read it; anything that would "
        "carry it on would start from a state the episode never had)"))),
])
def test_training_state_out_is_the_state_after_the_last_real_step(algos, kind):
    """ray#21392, the module's side: a training forward over zero-padded sequences returns, for each sequence,
    the state after its last real step (SEQ_LENS), not after its padding. RLlib's LSTM does not (xfail);
    RIMRLModule packs padded sequences so the RIM holds each state through its padding."""
    m = 5
    algo = algos(kind, m)
    module = algo.env_runner.module
    chunks = sample(algo, 30, reset=True)
    learner, batch, rows = learner_batch(algo, chunks)
    seq_lens = batch[Columns.SEQ_LENS]
    assert (seq_lens < m).any(), "some rows are padded"
    with torch.no_grad():
        out = numpy_state(learner.module[DEFAULT_MODULE_ID].forward_train(batch)[Columns.STATE_OUT])
    for c, rs in zip(chunks, rows, strict=True):
        states, _ = replay(module, c.get_observations()[:len(c) + 1], start_state(module, c))
        for j, row in enumerate(rs):
            last = j * m + int(seq_lens[row]) - 1  # the row's last real step (the bootstrap step counts)
            assert states_close(state_at(out, row), states[last]), f"{kind}: row of {int(seq_lens[row])} steps"


# ---- ray#2992 ------------------------------------------------------------------------------------------------

@KINDS
def test_ppo_loss_ignores_padded_timesteps(algos, kind):
    """ray#2992. LOSS_MASK is True exactly at the real steps (False at the zero padding and at the bootstrap step
    RLlib appends to each chunk), and PPO's loss is the mean over those steps only: filling every masked
    position of every column the loss reads with junk leaves it unchanged to the bit, while the same junk at a
    single real step changes it, and so does dropping the mask (a plain mean over the padded batch). RLlib 2.60
    masks correctly, for both modules."""
    m = 5
    algo = algos(kind, m)
    chunks = sample(algo, 30, reset=True)
    learner, batch, rows = learner_batch(algo, chunks)
    mask = batch[Columns.LOSS_MASK]
    for c, rs in zip(chunks, rows, strict=True):
        real = torch.cat([mask[r, :int(batch[Columns.SEQ_LENS][r])] for r in rs])
        assert real.tolist() == [True] * len(c) + [False], "real steps, then the bootstrap step"
    assert int(mask.sum()) == sum(len(c) for c in chunks) < mask.numel()

    loss = ppo_loss(learner, batch)
    gen = torch.Generator().manual_seed(0)

    def junk_at(where: torch.Tensor) -> dict[str, Any]:
        b = dict(batch)
        n_actions = batch[Columns.ACTION_DIST_INPUTS].shape[-1]
        for col, scale in ((Columns.OBS, 3.0), (Columns.ADVANTAGES, 100.0), (Columns.VALUE_TARGETS, 100.0),
                           (Columns.ACTION_LOGP, 5.0), (Columns.ACTION_DIST_INPUTS, 5.0)):
            noise = torch.randn(batch[col].shape, generator=gen) * scale
            b[col] = torch.where(where.view(*where.shape, *([1] * (batch[col].dim() - 2))), noise.to(batch[col].dtype),
                                 batch[col])
        actions = batch[Columns.ACTIONS]
        b[Columns.ACTIONS] = torch.where(where, torch.randint(n_actions, where.shape, generator=gen).to(actions.dtype),
                                         actions)
        return b

    assert torch.equal(ppo_loss(learner, junk_at(~mask)), loss), f"{kind}: padded steps moved the loss"
    one_real = torch.zeros_like(mask)
    one_real.view(-1)[int(torch.nonzero(mask.view(-1))[0])] = True
    assert not torch.allclose(ppo_loss(learner, junk_at(one_real)), loss), "the check can see one step"
    unmasked = {k: v for k, v in batch.items() if k != Columns.LOSS_MASK}
    assert not torch.allclose(ppo_loss(learner, unmasked), loss), "averaging over padding would differ"


@KINDS
def test_advantages_are_standardised_over_real_steps_only(algos, kind):
    """ray#2992's other half: statistics over the batch exclude the steps the loss excludes. PPO standardises the
    advantages; over the real steps (LOSS_MASK) they should have mean 0 and standard deviation 1. RLlib 2.60's
    GAE step includes each chunk's bootstrap step in the statistics; rllib_models.connectors re-standardises
    (build_ppo_config installs it), so this holds for both policies."""
    algo = algos(kind, 5)
    _, batch, _ = learner_batch(algo, sample(algo, 30, reset=True))
    adv = batch[Columns.ADVANTAGES][batch[Columns.LOSS_MASK]].double()
    assert abs(float(adv.mean())) < 1e-5 and abs(float(adv.std(correction=0)) - 1) < 1e-4, (
        f"{kind}: mean {float(adv.mean()):.2e}, std {float(adv.std(correction=0)):.6f}")


# ---- PR#47401 ------------------------------------------------------------------------------------------------

@KINDS
@pytest.mark.parametrize("max_seq_len", [5, 13])
def test_sequences_are_cut_every_max_seq_len_steps(algos, kind, max_seq_len):
    """PR#47401. The learner's sequences have exactly max_seq_len steps (not RLlib's old 20): every column's time
    axis is max_seq_len, each chunk (plus its bootstrap step) is cut into rows of max_seq_len steps with the
    remainder last, and the STATE_IN of row j of a chunk is the STATE_OUT the env runner stored at step
    j * max_seq_len - 1 of that chunk (the states kept for training are taken every max_seq_len steps)."""
    m = max_seq_len
    algo = algos(kind, m)
    module = algo.env_runner.module
    chunks = sample(algo, 30, reset=True) + sample(algo, 30, reset=False)
    _, batch, rows = learner_batch(algo, chunks)
    for col, value in batch.items():
        if col not in (Columns.STATE_IN, Columns.SEQ_LENS):
            assert value.shape[:2] == (len(batch[Columns.SEQ_LENS]), m), (col, tuple(value.shape))
    assert all(v.shape[0] == len(batch[Columns.SEQ_LENS]) for v in batch[Columns.STATE_IN].values())
    assert max(len(rs) for rs in rows) >= 3, "some chunk spans three or more sequences"
    for c, rs in zip(chunks, rows, strict=True):
        n = len(c) + 1
        assert batch[Columns.SEQ_LENS][list(rs)].tolist() == [m] * (n // m) + ([n % m] if n % m else [])
        stored = c.get_extra_model_outputs(key=Columns.STATE_OUT)
        for j, row in enumerate(rs):
            expected = start_state(module, c) if j == 0 else state_at(stored, j * m - 1)
            assert states_close(map_state(lambda a, r=row: a[r], batch[Columns.STATE_IN]), expected, atol=0.0)


# ---- ray#15483 -----------------------------------------------------------------------------------------------

@KINDS
def test_every_new_episode_starts_from_the_initial_state(algos, kind):
    """ray#15483. On a vectorised env runner whose episodes end at different times, every new episode's first
    step starts from get_initial_state(): its stored STATE_OUT and logits equal a fresh forward from the initial
    state on its first observation. The check can fail: starting that step from the previous episode's final
    state instead (a leak) gives a state far from the stored one."""
    algo = algos(kind, 5)
    module = algo.env_runner.module
    chunks = sample(algo, 60, reset=True) + sample(algo, 60, reset=False)
    done = [c for c in chunks if c.is_done]
    assert len({len(c) for c in done}) > 3, "episodes of different lengths"
    new = [c for c in chunks if c.t_started == 0]
    assert len(new) >= 3 * NUM_ENVS, "several episodes per env, so most start after another one ended"
    init = numpy_state(module.get_initial_state())
    leaks = 0
    for i, c in enumerate(new):
        states, logits = replay(module, c.get_observations()[:1], init)
        stored = c.get_extra_model_outputs(key=Columns.STATE_OUT)
        assert states_close(state_at(stored, 0), states[0]), f"{kind}: episode {i} did not start from the initial"
        assert np.allclose(c.get_extra_model_outputs(key=Columns.ACTION_DIST_INPUTS)[0], logits[0], atol=ATOL)
        if i >= NUM_ENVS:  # what a leak would have given: the final state of another, finished episode
            other = next(d for d in done if d is not c)
            leaked, _ = replay(module, c.get_observations()[:1],
                               state_at(other.get_extra_model_outputs(key=Columns.STATE_OUT), -1))
            assert state_distance(leaked[0], state_at(stored, 0)) > 1e-3
            leaks += 1
    assert leaks > 0
