"""PrototypeMemoryBank: FIFO ring, class means and checkpoint round trip."""

import io

import pytest
import torch

from dualalign.modeling.memory_bank import PrototypeMemoryBank

T = torch.tensor


def rows(*values):
    """Rows [v, -v] so each row is identifiable by its first entry."""
    return T([[float(v), -float(v)] for v in values])


def test_positional_order_is_size_dim_num_classes():
    bank = PrototypeMemoryBank(8, 2, 3)  # the order roi_heads.py uses
    assert (bank.size, bank.dim, bank.num_classes) == (8, 2, 3)
    assert bank.rows.shape == (8, 2) and bank.fill_per_class().shape == (3,)


def test_empty_bank():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=3)
    assert len(bank) == 0 and bool(bank)  # an empty bank is still a truthy module
    P, present = bank.class_means()
    assert P.shape == (3, 2) and torch.all(P == 0) and not present.any()
    assert bank.fill_per_class().tolist() == [0, 0, 0]
    assert bank.labels.tolist() == [-1, -1, -1, -1]


def test_fifo_order_and_wrap_around():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=3)
    bank.push(rows(1, 2, 3), T([0, 1, 2]))
    assert len(bank) == 3 and int(bank.ptr) == 3
    bank.push(rows(4, 5), T([1, 1]))  # slot 3, then wraps to slot 0 (the oldest, row 1)
    assert len(bank) == 4 and int(bank.ptr) == 1
    assert bank.rows[:, 0].tolist() == [5, 2, 3, 4]
    assert bank.labels.tolist() == [1, 1, 2, 1]
    bank.push(rows(6), T([0]))  # overwrites row 2, now the oldest
    assert bank.rows[:, 0].tolist() == [5, 6, 3, 4] and len(bank) == 4


def test_push_more_rows_than_capacity_keeps_newest():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=2)
    bank.push(rows(0), T([0]))
    bank.push(rows(1, 2, 3, 4, 5, 6), T([0, 1, 0, 1, 0, 1]))
    # Newest 4 rows (3..6) go to slots 1, 2, 3, 0 starting at ptr 1; ptr = (1 + 4) % 4 = 1.
    assert bank.rows[:, 0].tolist() == [6, 3, 4, 5]
    assert bank.labels.tolist() == [1, 0, 1, 0]
    assert int(bank.ptr) == 1 and len(bank) == 4


def test_empty_push_adds_no_row():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=2)
    bank.push(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert len(bank) == 0 and int(bank.ptr) == 0
    assert int(bank.pushes) == 1  # only the step count moves


def test_class_means_and_fill_counts():
    bank = PrototypeMemoryBank(size=8, dim=2, num_classes=3)
    bank.push(T([[0.0, 0.0], [2.0, 4.0], [10.0, 10.0]]), T([0, 0, 2]))
    P, present = bank.class_means()
    # class 0: mean((0,0),(2,4)) = (1,2); class 1: none; class 2: (10,10)
    torch.testing.assert_close(P, T([[1.0, 2.0], [0.0, 0.0], [10.0, 10.0]]))
    assert present.tolist() == [True, False, True]
    assert bank.fill_per_class().tolist() == [2, 0, 1]


def test_push_detaches_and_checks_inputs():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=2)
    x = torch.ones(1, 2, requires_grad=True)
    bank.push(x * 3, T([1]))
    assert not bank.rows.requires_grad and bank.rows[0].tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        bank.push(torch.ones(1, 2), T([2]))
    with pytest.raises(ValueError, match="must be"):
        bank.push(torch.ones(1, 3), T([0]))


def test_state_dict_round_trip_weights_only():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=3)
    bank.push(rows(1, 2, 3, 4, 5), T([0, 1, 2, 0, 1]))
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"rows", "labels", "ptr", "count", "pushed_at", "pushes"}

    fresh = PrototypeMemoryBank(size=4, dim=2, num_classes=3)
    fresh.load_state_dict(state)
    assert len(fresh) == 4 and int(fresh.ptr) == int(bank.ptr)
    torch.testing.assert_close(fresh.class_means()[0], bank.class_means()[0])
    # The restored ring continues where the original would.
    for b in (bank, fresh):
        b.push(rows(9), T([2]))
    assert torch.equal(fresh.rows, bank.rows) and torch.equal(fresh.labels, bank.labels)
    assert int(fresh.age()) == int(bank.age())


def test_age_counts_pushes_since_the_oldest_row():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=2)
    assert int(bank.age()) == 0  # empty
    bank.push(rows(1, 2), T([0, 1]))  # push 0 writes two rows
    assert int(bank.age()) == 1
    bank.push(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))  # a step without rows
    assert int(bank.age()) == 2
    bank.push(rows(3, 4, 5), T([0, 1, 0]))  # push 2 overwrites row 1 (written at push 0)
    assert bank.pushed_at.tolist() == [2, 0, 2, 2] and int(bank.age()) == 3
    bank.push(rows(6), T([1]))  # push 3 overwrites the last row of push 0
    assert int(bank.age()) == 2  # the oldest rows are push 2's
    bank.reset()
    assert int(bank.age()) == 0 and int(bank.pushes) == 0


def test_a_bank_saved_without_ages_loads_as_pushed_at_step_0():
    old = PrototypeMemoryBank(size=4, dim=2, num_classes=2)
    old.push(rows(1, 2), T([0, 1]))
    state = {k: v for k, v in old.state_dict().items() if k not in ("pushed_at", "pushes")}
    fresh = PrototypeMemoryBank(size=4, dim=2, num_classes=2)
    fresh.load_state_dict(state)  # strict: the missing buffers are filled in
    assert fresh.pushed_at.tolist() == [0, 0, -1, -1] and int(fresh.age()) == 0


def test_bank_follows_module_dtype():
    bank = PrototypeMemoryBank(size=4, dim=2, num_classes=2).to(torch.float64)
    bank.push(rows(1), T([0]))
    assert bank.rows.dtype == torch.float64 and bank.labels.dtype == torch.long
    assert bank.class_means()[0].dtype == torch.float64
