"""Replay buffers, data routing and store tailing."""

from __future__ import annotations

import numpy as np
import pytest

from learner.buffers import Layout, TransitionBuffer, sample_mixed
from learner.routing import Buffers, Router, layout_for, runs
from learner.settings import Settings
from learner.tail import StoreTail
from spec.step import ObsSpec
from tests.learner_fakes import FakeStore, tiny_config

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
