"""Under several processes every rank's RNG state is saved, and each rank resumes its own."""

import pytest
import torch
from detectron2.utils import comm

from dualalign.engine import checkpoint as ckpt_mod
from dualalign.engine.checkpoint import AtomicCheckpointer
from dualalign.engine.rng_state import RNGState


def _state_after(seed):
    torch.manual_seed(seed)
    return RNGState().state_dict()


def test_each_rank_resumes_its_own_rng_stream(tmp_path, monkeypatch):
    rank_states = [_state_after(10), _state_after(11)]  # what ranks 0 and 1 hold at the save
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "all_gather", lambda obj: rank_states)
    model = torch.nn.Linear(2, 2)

    # Rank 0 writes the file (its own "rng" plus every rank's state).
    monkeypatch.setattr(comm, "get_rank", lambda: 0)
    torch.manual_seed(10)
    AtomicCheckpointer(model, str(tmp_path), rng=RNGState()).save("model_0000009")
    saved = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    assert len(saved["rng_per_rank"]) == 2

    # Rank 1 loads it and continues rank 1's stream, not rank 0's.
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    torch.manual_seed(999)
    left = AtomicCheckpointer(model, str(tmp_path), save_to_disk=False, rng=RNGState()).load(
        str(tmp_path / "model_0000009.pth")
    )
    assert "rng_per_rank" not in left
    assert torch.equal(torch.get_rng_state(), rank_states[1]["torch"])


def test_another_process_count_falls_back_to_rank0_state(tmp_path, monkeypatch, caplog):
    rank_states = [_state_after(20), _state_after(21)]
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "all_gather", lambda obj: rank_states)
    model = torch.nn.Linear(2, 2)
    torch.manual_seed(20)
    AtomicCheckpointer(model, str(tmp_path), rng=RNGState()).save("model_final")

    monkeypatch.setattr(comm, "get_world_size", lambda: 4)
    monkeypatch.setattr(comm, "get_rank", lambda: 3)
    torch.manual_seed(999)
    with caplog.at_level("WARNING", logger=ckpt_mod.__name__):
        AtomicCheckpointer(model, str(tmp_path), save_to_disk=False, rng=RNGState()).load(
            str(tmp_path / "model_final.pth")
        )
    assert "rank 0's state" in caplog.text
    assert torch.equal(torch.get_rng_state(), rank_states[0]["torch"])


def test_single_process_checkpoints_have_no_per_rank_states(tmp_path):
    AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path), rng=RNGState()).save("m")
    assert "rng_per_rank" not in torch.load(tmp_path / "m.pth", weights_only=True)


def test_rng_isolated_restores_every_generator_and_returns_the_result():
    import random

    import numpy as np

    from dualalign.engine.rng_state import rng_isolated, seed_all

    def draws():
        return (torch.rand(1).item(), float(np.random.rand()), random.random())

    seed_all(3)
    expected = draws()
    seed_all(3)
    result = rng_isolated(draws)()
    assert result == expected  # the wrapped function drew from the same streams
    assert draws() == expected  # and the streams were put back where they were


def test_rng_isolated_restores_after_an_exception():
    import numpy as np

    from dualalign.engine.rng_state import rng_isolated

    def fails():
        np.random.rand(5)
        raise RuntimeError("evaluation failed")

    np.random.seed(4)
    expected = np.random.rand()
    np.random.seed(4)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        rng_isolated(fails)()
    assert np.random.rand() == expected
