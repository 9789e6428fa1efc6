"""Replay buffers, data routing and store tailing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from learner.agent import Agent, TorchBatch
from learner.buffers import Batch, Layout, TransitionBuffer, sample_mixed
from learner.classifier import ClassifierLearner
from learner.routing import Buffers, Router, layout_for, runs
from learner.settings import Settings
from learner.tail import StoreTail
from policies.networks import PRESETS
from policies.runner import PolicyRunner
from spec.step import ObsSpec
from tests.learner_fakes import FakeStore, fake_step, tiny_config

LAYOUT = Layout((2,), np.dtype(np.float32), 1, 1)


def segment(seg: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames that encode (segment, step) so a sampled transition can be checked."""
    main = np.stack([np.full(n, seg, np.float32), np.arange(n, dtype=np.float32)], 1)
    return main, np.zeros((n, 1), np.float32), np.arange(n, dtype=np.float32)[:, None]


def assert_within_segments(buf: TransitionBuffer, rng: np.random.Generator, n: int = 5000) -> None:
    b = buf.sample(n, rng)
    np.testing.assert_array_equal(b.next_obs[:, 0], b.obs[:, 0])  # same segment
    np.testing.assert_array_equal(b.next_obs[:, 1], b.obs[:, 1] + 1)  # the next step of it


def test_sampling_never_crosses_segment_boundaries_even_when_the_ring_wraps():
    rng = np.random.default_rng(0)
    buf = TransitionBuffer(50, LAYOUT)
    lengths = [7, 1, 12, 3, 20, 9, 15, 6, 11]  # 84 steps through a 50-step ring
    for seg, n in enumerate(lengths):
        buf.append(seg, 0, *segment(seg, n))
        if buf.num_transitions:
            assert_within_segments(buf, rng, 500)
    assert len(buf) == 50 and buf.segments == len(lengths)
    # Every stored step except the last of each segment is sampleable; last steps never are.
    sampled = buf.sample(20_000, rng)
    assert set(sampled.obs[:, 1].tolist()) <= set(range(19))
    last = {(s, n - 1) for s, n in enumerate(lengths)}
    assert not ({tuple(x) for x in sampled.obs.astype(int).tolist()} & last)


def test_growing_segment_gains_transitions_and_a_new_key_does_not_join():
    rng = np.random.default_rng(1)
    buf = TransitionBuffer(100, LAYOUT)
    main, p, a = segment(0, 10)
    buf.append("ep", 0, main[:4], p[:4], a[:4])
    assert buf.num_transitions == 3
    buf.append("ep", 4, main[4:], p[4:], a[4:])  # the committed prefix grew
    assert buf.num_transitions == 9 and buf.segments == 1
    m2, p2, a2 = segment(1, 5)
    m2[:, 1] += 10  # would look like a continuation if boundaries were ignored
    buf.append("other", 10, m2, p2, a2)
    assert buf.num_transitions == 13 and buf.segments == 2
    assert_within_segments(buf, rng)
    buf.append("ep", 10, *segment(0, 3))  # same key but not right after its last write: a new segment
    assert buf.segments == 3


def test_not_done_online_always_one_demo_terminal_only_into_the_final_frame():
    rng = np.random.default_rng(2)
    buf = TransitionBuffer(100, LAYOUT)
    buf.append(0, 0, *segment(0, 8))
    assert np.all(buf.sample(500, rng).not_done == 1.0)
    demo = TransitionBuffer(100, LAYOUT)
    demo.append("d", 0, *segment(5, 6), terminal=True)
    b = demo.sample(2000, rng)
    final = b.next_obs[:, 1] == 5
    assert final.any() and np.all(b.not_done[final] == 0.0) and np.all(b.not_done[~final] == 1.0)


def test_mixed_batches_have_exactly_k_demo_rows():
    rng = np.random.default_rng(3)
    online, demo = TransitionBuffer(100, LAYOUT, "online"), TransitionBuffer(100, LAYOUT, "demo")
    online.append(0, 0, *segment(1, 30))
    batch, k = sample_mixed(online, demo, 16, 4, rng)
    assert k == 0 and len(batch) == 16  # no demos yet: all online
    demo.append(0, 0, *segment(9, 10), terminal=True)
    batch, k = sample_mixed(online, demo, 16, 4, rng)
    assert k == 4 and len(batch) == 16
    assert np.all(batch.obs[:12, 0] == 1) and np.all(batch.obs[12:, 0] == 9)
    # The trainer samples into one batch again and again: same arrays, new rows.
    out = Batch.empty(16, LAYOUT)
    first = out.obs
    for _ in range(3):
        batch, k = sample_mixed(online, demo, 16, 4, rng, out)
        assert batch is out and batch.obs is first
        assert np.all(batch.obs[:12, 0] == 1) and np.all(batch.obs[12:, 0] == 9)
        np.testing.assert_array_equal(batch.next_obs[:, 1], batch.obs[:, 1] + 1)
    with pytest.raises(ValueError, match="16 rows"):
        sample_mixed(online, demo, 16, 4, rng, Batch.empty(8, LAYOUT))


def test_runs():
    assert runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert runs(np.zeros(3, bool)) == []
    assert runs(np.ones(2, bool)) == [(0, 2)]


def make_router(tmp_path, setting: str):
    cfg = tiny_config(tmp_path, setting, seed_steps=30)
    spec = ObsSpec.from_config(cfg, "pixels")
    s = Settings.from_config(cfg)
    buffers = Buffers.create(layout_for(spec, 4), 1000)
    return cfg, Router(s, spec, buffers), buffers


def ingest_all(tmp_path, cfg, router) -> StoreTail:
    tail = StoreTail(cfg.store.path, router.spec.keys() + ["action", "policy_version", "intervention"])
    for c in tail.poll():
        router.ingest(c)
    return tail


def level_of(frames: np.ndarray) -> set[int]:
    return {int(f[0, 0, 0]) for f in frames}


def test_routing_of_seed_practice_and_demo_data_robot(tmp_path):
    cfg, router, bufs = make_router(tmp_path, "robot")
    st = FakeStore(cfg)
    st.episode("demo", "forward", 60, success=True, levels=list(range(60)))
    st.episode("demo", "forward", 10, success=False, levels=[200] * 10)  # failed demos are not used
    st.episode("demo", "backward", 40, success=True, levels=[100 + i for i in range(40)])
    # Forward practice: 5 random seed steps, 2 teleop steps (intervention), 3 random, then the policy.
    versions = [-1] * 10 + [3] * 10 + [-1] * 5
    inter = [False] * 5 + [True] * 2 + [False] * 18
    st.episode("practice", "forward", 25, versions=versions, interventions=inter, levels=[150] * 25)
    st.episode("practice", "backward", 20, version=-1, levels=[160] * 20)
    st.episode("eval", "forward", 10, version=3, levels=[170] * 10)
    st.close()
    ingest_all(tmp_path, cfg, router)

    on_f, on_b = bufs.online["forward"], bufs.online["backward"]
    assert len(on_f) == 25 + 20  # its own 25 + the backward seed phase (no backward policy yet)
    assert len(on_b) == 20 + 8  # its own 20 + 8 forward seed steps (not the 2 teleop, not after v3)
    assert router.seed_copies == 28 and router.has_policy == {"forward": True, "backward": False}
    # Seed copies are their own segments: 5 and 3 steps → 4 + 2 transitions, none across the teleop gap.
    assert on_b.num_transitions == 19 + 4 + 2
    # Demo buffers: successful demos of the right direction only; eval data is not training data.
    assert len(bufs.demo["forward"]) == 60 and len(bufs.demo["backward"]) == 40
    assert router.demos_skipped == 1 and router.demos_used == {"forward": 1, "backward": 1}
    assert 170 not in level_of(on_f.main[: len(on_f)])
    # Positives: C_f = last 21 forward-demo frames; C_b = first 51 forward + last 21 backward.
    assert level_of(bufs.positives["forward"].frames) == set(range(39, 60))
    assert level_of(bufs.positives["backward"].frames) == set(range(51)) | set(range(119, 140))
    # Env steps: practice only, in store order; seed_steps = 30 → forward 0 post-seed, backward 15.
    assert router.env_steps == 45 and router.post_seed == {"forward": 0, "backward": 15}


def test_routing_sim_backward_demos_and_positives(tmp_path):
    cfg, router, bufs = make_router(tmp_path, "sim")
    st = FakeStore(cfg)
    st.episode("demo", "forward", 30, success=True, levels=list(range(30)))
    st.episode("demo", "backward", 20, success=True, levels=[100 + i for i in range(20)])
    st.close()
    ingest_all(tmp_path, cfg, router)
    assert len(bufs.demo["forward"]) == 30
    assert len(bufs.demo["backward"]) == 50  # backward demo buffer = both kinds of demos in sim
    assert level_of(bufs.positives["forward"].frames) == set(range(9, 30))
    assert level_of(bufs.positives["backward"].frames) == set(range(30))  # all forward-demo frames
    # Each demo is its own segment, and only its final transition is terminal.
    b = bufs.demo["backward"].sample(3000, np.random.default_rng(0))
    assert int((b.not_done == 0).sum()) > 0
    terminal_next = {int(x[0, 0, 0]) for x in b.next_obs[b.not_done == 0]}
    assert terminal_next == {29, 119}


def test_tail_delivers_new_closed_episodes_and_the_open_prefix(tmp_path):
    cfg = tiny_config(tmp_path)
    keys = ["obs/wrist", "obs/front", "obs/proprio", "action", "policy_version", "intervention"]
    tail = StoreTail(cfg.store.path, keys, include_open=True)
    assert tail.poll() == []  # no store yet: nothing, no error
    st = FakeStore(cfg)
    st.episode("practice", "forward", 10)
    chunks = tail.poll()
    assert [(c.info.id, c.start, len(c), c.closed) for c in chunks] == [("000000", 0, 10, True)]
    assert tail.poll() == []
    ep = st.episode("practice", "backward", 12, close=False)  # flushed: the committed prefix is visible
    open_chunks = tail.poll()
    assert [(c.start, len(c), c.closed) for c in open_chunks] == [(0, 12, False)]
    st.append(ep, 8)
    ep.close()
    rest = tail.poll()
    assert [(c.start, len(c), c.closed) for c in rest] == [(12, 8, True)]
    demo = st.episode("demo", "forward", 12, success=True, close=False)
    assert tail.poll() == []  # demos only once closed (success known)
    demo.close(success=True)
    assert [(c.info.kind, len(c)) for c in tail.poll()] == [("demo", 12)]
    st.close()

    closed_only = StoreTail(cfg.store.path, keys, include_open=False)
    assert sum(len(c) for c in closed_only.poll()) == 42


def test_tail_refuses_a_store_without_the_needed_keys(tmp_path):
    cfg = tiny_config(tmp_path)
    FakeStore(cfg).close()
    with pytest.raises(Exception, match="obs/side"):
        StoreTail(cfg.store.path, ["obs/side"]).poll()


def test_first_poll_only_counts_practice_data_the_buffers_would_not_keep(tmp_path):
    cfg, router, bufs = make_router(tmp_path, "sim")
    st = FakeStore(cfg)
    st.episode("demo", "forward", 10, success=True)
    for i in range(4):  # forward, backward, forward, backward; 25 steps each
        st.episode("practice", "forward" if i % 2 == 0 else "backward", 25, levels=[i] * 25)
    st.close()
    tail = StoreTail(cfg.store.path, router.spec.keys() + ["action", "policy_version", "intervention"], keep=20)
    chunks = tail.poll()
    light = {c.info.id: c.light for c in chunks}
    assert light == {"000000": False, "000001": True, "000002": True, "000003": False, "000004": False}
    assert all(set(c.data) == {"policy_version", "intervention"} for c in chunks if c.light)
    for c in chunks:
        router.ingest(c)
    assert router.env_steps == 100 and router.post_seed == {"forward": 25, "backward": 45}  # seed_steps 30
    # Loaded: the newest phase of each direction (+ its seed copy in the other buffer).
    assert level_of(bufs.online["forward"].main[: len(bufs.online["forward"])]) == {2, 3}
    assert level_of(bufs.online["backward"].main[: len(bufs.online["backward"])]) == {2, 3}
    assert len(bufs.demo["forward"]) == 10


def pattern(step: int, view: int, h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: a different value for each step, channel (3·view + k), row and column."""
    c = 3 * view + np.arange(3)
    y, x = np.arange(h)[:, None, None], np.arange(w)[None, :, None]
    return ((step * 13 + c * 40 + y * 3 + x * 7) % 256).astype(np.uint8)


def conv_inputs(conv: torch.nn.Module) -> list[torch.Tensor]:
    """Records the input of every call of `conv` (what the first convolution is given)."""
    seen: list[torch.Tensor] = []
    conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def as_conv_input(frame: np.ndarray) -> torch.Tensor:
    """[H, W, C] uint8 → the [C, H, W] float x/255 − 0.5 a first convolution should see."""
    return torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0 - 0.5


def is_shift_of(x: torch.Tensor, frame: np.ndarray, pad: int = 4) -> bool:
    """x equals one whole-pixel shift of `frame` within ±pad (replicate-padded), as conv input."""
    h, w = frame.shape[:2]
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    shifts = [padded[dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    candidates = torch.from_numpy(np.stack(shifts)).permute(0, 3, 1, 2).float() / 255.0 - 0.5
    return bool(((candidates - x).abs().amax(dim=(1, 2, 3)) < 1e-6).any())


def test_pixels_keep_their_layout_from_store_to_encoder_input(tmp_path):
    """A frame whose value depends on (step, view, channel, row, column) reaches the first
    convolution of the agent (after the random shift), of the classifier and of the policy runner
    unchanged: no view, channel, row or column is swapped anywhere on the way."""
    h, w = 24, 40  # not square, so rows and columns cannot be confused
    cfg = tiny_config(tmp_path, "sim", view=(h, w))
    spec = ObsSpec.from_config(cfg, "pixels")
    buffers = Buffers.create(layout_for(spec, 4), 100)
    router = Router(Settings.from_config(cfg), spec, buffers)
    st = FakeStore(cfg)
    for kind, first, n in (("practice", 0, 12), ("demo", 100, 8)):
        ep = st.writer.begin_episode(kind, "forward", {})
        for step in range(first, first + n):
            s = fake_step(cfg, step * 0.1, st.rng, level=0)
            s |= {"obs/wrist": pattern(step, 0, h, w), "obs/front": pattern(step, 1, h, w)}
            s["obs/proprio"][0] = step  # which step a sampled row came from
            ep.append(s)
        ep.close(success=True)
    st.close()
    ingest_all(tmp_path, cfg, router)

    def frame(step: int) -> np.ndarray:  # the stacked observation the policy should see
        return np.concatenate([pattern(step, 0, h, w), pattern(step, 1, h, w)], axis=-1)

    batch = Batch.empty(16, buffers.online["forward"].layout)
    sample_mixed(buffers.online["forward"], buffers.demo["forward"], 16, 4, np.random.default_rng(0), batch)
    steps = batch.proprio[:, 0].astype(int)
    assert set(steps[:12]) <= set(range(11)) and set(steps[12:]) <= set(range(100, 107))
    np.testing.assert_array_equal(batch.next_proprio[:, 0], steps + 1)
    for i, s in enumerate(steps):  # the ring buffer and the batch hold the frames as stored
        np.testing.assert_array_equal(batch.obs[i], frame(s))
        np.testing.assert_array_equal(batch.next_obs[i], frame(s + 1))

    torch.manual_seed(0)
    agent = Agent(Settings.from_config(cfg).agent("forward"), spec, {"dim": 4}, PRESETS["tiny"])
    seen = conv_inputs(agent.encoder.convs[0])
    tb = TorchBatch.from_numpy(batch, torch.device("cpu"))
    agent.encoder(agent.augment(tb.obs))  # as Agent.update does
    agent.encoder(agent.augment(tb.next_obs))
    for got, rows in zip(seen, (steps, steps + 1), strict=True):
        assert got.shape == (16, 6, h, w)
        for i, s in enumerate(rows):
            assert is_shift_of(got[i], frame(s)), f"row {i} (step {s}) is not a shift of its stored frame"

    clf = ClassifierLearner("forward", spec, PRESETS["tiny"], "log_p", ["front"])
    seen = conv_inputs(clf.net.encoder[0])
    clf.reward(tb.next_obs)  # un-shifted s′, the front view's channels only
    for i, s in enumerate(steps + 1):
        torch.testing.assert_close(seen[0][i], as_conv_input(pattern(s, 1, h, w)), atol=1e-6, rtol=0)

    runner = PolicyRunner(agent.checkpoint(version=1), num_threads=None, seed=0)
    seen = conv_inputs(runner.policy.encoder.convs[0])
    stored = {"obs/wrist": pattern(5, 0, h, w), "obs/front": pattern(5, 1, h, w), "obs/proprio": np.zeros(4, np.float32)}
    runner.act(stored)
    torch.testing.assert_close(seen[0][0], as_conv_input(frame(5)), atol=1e-6, rtol=0)


def test_routing_sim_pre_goal_backward_positives_leave_out_the_goal_hold(tmp_path):
    cfg, router, bufs = make_router(tmp_path, "sim")
    router.settings = dataclasses.replace(router.settings, backward_positives_pre_goal=True)
    st = FakeStore(cfg)
    st.episode("demo", "forward", 30, success=True, levels=list(range(30)))
    st.close()
    ingest_all(tmp_path, cfg, router)
    assert level_of(bufs.positives["forward"].frames) == set(range(9, 30))
    assert level_of(bufs.positives["backward"].frames) == set(range(9))  # before the 21 goal-hold frames
