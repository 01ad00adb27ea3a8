"""Tests of the shared-memory BoxStore."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from ccrop import BoxStore, box_iou
from ccrop.boxes import box_area, check_box, check_boxes


def test_init_full_and_given_box():
    assert torch.equal(BoxStore(3)[1], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(
        BoxStore(2, (0.25, 0.25, 0.75, 0.75)).boxes, torch.tensor([[0.25, 0.25, 0.75, 0.75]] * 2)
    )
    assert BoxStore(5).boxes.is_shared()


def test_update_by_index_and_round_trip():
    store = BoxStore(6)
    new = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 1.0]])
    store.update(torch.tensor([4, 1]), new)
    assert torch.equal(store[4], new[0]) and torch.equal(store[1], new[1])
    assert torch.equal(store[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    other = BoxStore(6)
    other.load_state_dict(store.state_dict())
    assert torch.equal(other.boxes, store.boxes) and other.version == store.version == 1
    state = store.state_dict()
    state["boxes"][0, 0] = 0.9  # the state is a copy, not a view of the store
    assert store[0][0] == 0.0


@pytest.mark.parametrize(
    "boxes,word",
    [
        (torch.tensor([[0.5, 0.0, 0.4, 1.0]]), "x0 <= x1"),
        (torch.tensor([[0.0, 0.0, 1.0, 1.5]]), r"\[0, 1\]"),
        (torch.tensor([[float("nan"), 0.0, 1.0, 1.0]]), "finite"),
        (torch.tensor([0.0, 0.0, 1.0, 1.0]), r"\(B, 4\)"),
    ],
)
def test_bad_update_rejected_and_nothing_written(boxes, word):
    store = BoxStore(3)
    before = store.boxes.clone()
    with pytest.raises(ValueError, match=word):
        store.update(torch.tensor([0]), boxes)
    assert torch.equal(store.boxes, before) and store.version == 0


@pytest.mark.parametrize(
    "bad,message",
    [
        ([0.5, 0.0, 0.4, 1.0], r"boxes row 2: x1=0\.4 is less than x0=0\.5"),
        ([0.0, 0.3, 1.0, 0.2], r"boxes row 2: y1=0\.2 is less than y0=0\.3"),
        ([0.0, 0.0, 1.0, 1.5], r"boxes row 2: y1=1\.5 is outside \[0, 1\]"),
        ([0.0, float("inf"), 1.0, 1.0], r"boxes row 2: value 'inf' is not a finite number"),
    ],
)
def test_check_boxes_names_the_first_bad_row_and_why(bad, message):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 5)
    boxes[2] = torch.tensor(bad)
    boxes[4] = torch.tensor([float("nan")] * 4)  # a later bad row is not the one named
    with pytest.raises(ValueError, match=message):
        check_boxes(boxes)
    with pytest.raises(ValueError, match=r"^line 7: "):
        check_boxes(boxes, where=lambda r: f"line {r + 5}")
    with pytest.raises(RuntimeError, match=r"^c: "):
        check_boxes(boxes, where="abcde".__getitem__, error=RuntimeError)


def test_check_boxes_tolerance_dtype_and_output():
    ok = torch.tensor([[0.0, 0.1, 0.5, 1.0]], dtype=torch.float64)
    out = check_boxes(ok)
    assert out.dtype == torch.float32 and torch.equal(out, ok.float())
    assert check_boxes(ok, dtype=torch.float64).dtype == torch.float64
    over = torch.tensor([[-1e-7, -0.0, 0.5, 1 + 1e-7]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x0=-1e-07 is outside \[0, 1\]"):
        check_boxes(over, dtype=torch.float64)
    clamped = check_boxes(over, dtype=torch.float64, tol=1e-6)
    assert clamped.tolist() == [[0.0, 0.0, 0.5, 1.0]] and str(clamped[0, 1].item()) == "-0.0"
    with pytest.raises(ValueError, match=r"by more than 1e-06"):
        check_boxes(over * 100, dtype=torch.float64, tol=1e-6)
    assert check_boxes(torch.empty(0, 4)).shape == (0, 4)


def test_check_box_returns_the_values_given():
    """The single-box check checks in float64: nothing is rounded; bad boxes are named."""
    assert check_box((0.1, 0.2, 0.3, 0.4)) == (0.1, 0.2, 0.3, 0.4)
    assert check_box(torch.tensor([0.0, 0.0, 1.0, 1.0])) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"init_box .*x1=0\.4 is less than x0=0\.5"):
        check_box((0.5, 0.0, 0.4, 1.0), "init_box")
    with pytest.raises(ValueError, match=r"y1=1\.0000000001 is outside"):
        check_box((0.0, 0.0, 1.0, 1.0000000001))  # float32 would round it to 1
    for bad in [(0.5, 0, 0.4, 1), (0, 0, 1, 1.2), (float("nan"), 0, 1, 1), (-0.1, 0, 1, 1),
                (0, 0, 1), "abcd"]:
        with pytest.raises(ValueError, match="box"):
            check_box(bad)


def test_bad_indices_and_lengths():
    store = BoxStore(3)
    with pytest.raises(ValueError, match=r"indices in \[3, 3\]"):
        store.update(torch.tensor([3]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="2 indices in .* for 1 boxes"):
        store.update(torch.tensor([0, 1]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="n"):
        BoxStore(0)
    with pytest.raises(ValueError, match="holds 2 boxes"):
        store.load_state_dict(BoxStore(2).state_dict())


@pytest.mark.parametrize("n", [2.5, 3.0, True, "3", None, -1])
def test_store_length_must_be_an_integer(n):
    """BoxStore(2.5) made a store of 2 boxes; a float (even 3.0), bool or string is refused."""
    with pytest.raises(ValueError, match=r"n \(number of images\) must be an integer >= 1"):
        BoxStore(n)
    assert len(BoxStore(torch.tensor(3))) == 3  # an integer 0-d tensor is an integer


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 9), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)
        ),
        min_size=1,
        max_size=20,
    )
)
def test_update_property_valid_boxes_stay_valid(rows):
    store = BoxStore(10)
    idx = torch.tensor([r[0] for r in rows])
    b = torch.tensor(
        [[min(r[1], r[3]), min(r[2], r[4]), max(r[1], r[3]), max(r[2], r[4])] for r in rows]
    )
    store.update(idx, b)
    boxes = store.boxes
    assert torch.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    last = {int(i): k for k, i in enumerate(idx)}  # last occurrence wins
    for i, k in last.items():
        assert torch.equal(store[i], b[k].float())


def test_iou_and_area():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]])
    assert torch.allclose(box_area(a), torch.tensor([0.25, 1.0]))
    assert torch.allclose(box_iou(a, b), torch.tensor([0.0625 / 0.4375, 1.0]))


class _ReadBox(Dataset):
    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        return self.store[i]


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.slow  # worker processes (fork and spawn)
def test_persistent_workers_see_updates(ctx):
    """The official code's defect: persistent workers would keep stale boxes."""
    store = BoxStore(4)
    loader = DataLoader(
        _ReadBox(store),
        batch_size=4,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context=ctx,
    )
    first = next(iter(loader))
    assert torch.equal(first, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4))
    new = torch.rand(4, 2).sort(dim=1).values
    new = torch.stack(
        [new[:, 0] * 0.5, new[:, 0] * 0.5, 0.5 + new[:, 1] * 0.5, 0.5 + new[:, 1] * 0.5], 1
    )
    store.update(torch.arange(4), new)
    second = next(iter(loader))  # same worker processes (persistent)
    assert torch.equal(second, new)
