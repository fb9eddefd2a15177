"""Metrics and losses against independent references (scikit-learn, scikit-image, torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from ndunet.training.losses import get_loss, soft_dice
from ndunet.training.metrics import PSNR, Accuracy, Dice, IoU, accuracy, dice, get_metric, iou, psnr


def _seg(spatial_dims: int, k: int, b: int = 3, size: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (size,) * spatial_dims
    logits = torch.randn(b, k, *shape, generator=g)
    target = torch.randint(0, max(k, 2), (b, *shape), generator=g)
    return logits, target


def test_accuracy_matches_sklearn_for_classification():
    logits, target = torch.randn(50, 4), torch.randint(0, 4, (50,))
    assert accuracy(logits, target) == pytest.approx(accuracy_score(target, logits.argmax(1)))


def test_dice_and_iou_match_sklearn_macro_scores(spatial_dims):
    logits, target = _seg(spatial_dims, k=3)
    pred = logits.argmax(1).reshape(-1).numpy()
    true = target.reshape(-1).numpy()
    # Dice over dataset counts is the F1 score; classes present in either are averaged
    assert dice(logits, target) == pytest.approx(f1_score(true, pred, average="macro"), rel=1e-12)
    assert iou(logits, target) == pytest.approx(
        jaccard_score(true, pred, average="macro"), rel=1e-12
    )
    assert accuracy(logits, target) == pytest.approx(accuracy_score(true, pred))


def test_binary_single_channel_scores_foreground_only(spatial_dims):
    logits, target = _seg(spatial_dims, k=1, seed=1)
    pred = (logits[:, 0] > 0).reshape(-1).numpy()
    true = target.reshape(-1).numpy()
    assert dice(logits, target.unsqueeze(1)) == pytest.approx(
        f1_score(true, pred, average="binary")
    )
    assert iou(logits, target) == pytest.approx(jaccard_score(true, pred, average="binary"))


def test_accumulating_over_batches_equals_one_big_batch():
    logits, target = _seg(2, k=4, b=6, seed=2)
    for cls in (Dice, IoU, Accuracy):
        m = cls()
        for i in range(0, 6, 2):
            m.update(logits[i : i + 2], target[i : i + 2])
        whole = cls()
        whole.update(logits, target)
        assert m.compute() == pytest.approx(whole.compute(), rel=1e-12)


def test_class_absent_everywhere_is_not_averaged_in():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1
    logits = F.one_hot(target, 3).movedim(-1, 1).float()  # perfect, class 2 absent
    assert dice(logits, target) == 1.0 and iou(logits, target) == 1.0


def test_psnr_matches_skimage():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ref = np.mean(
        [peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=2.0) for i in range(4)]
    )
    assert psnr(y, x).item() == pytest.approx(ref, rel=1e-6)
    m = PSNR()
    m.update(y[:2], x[:2])
    m.update(y[2:], x[2:])
    assert m.compute() == pytest.approx(ref, rel=1e-6)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="does not match"):
        dice(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lie in \[0, 2\]"):
        dice(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("f2")
    with pytest.raises(ValueError, match="valid names"):
        get_loss("hinge")


def test_cross_entropy_nd_matches_manual_log_softmax(spatial_dims):
    logits, target = _seg(spatial_dims, k=3, seed=4)
    fn, name = get_loss("cross_entropy")
    logp = logits.log_softmax(1)
    manual = -logp.gather(1, target.unsqueeze(1)).mean()
    assert name == "cross_entropy"
    torch.testing.assert_close(fn(logits, target), manual)
    torch.testing.assert_close(fn(logits, target.unsqueeze(1)), manual)  # (B, 1, *spatial) too


def test_soft_dice_is_zero_for_confident_perfect_and_one_for_disjoint():
    target = torch.randint(0, 2, (2, 6, 6))
    perfect = F.one_hot(target, 2).movedim(-1, 1).float() * 40 - 20
    assert soft_dice(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice(-perfect, target, eps=0.0).item() == pytest.approx(1.0, abs=1e-6)
    binary = target.unsqueeze(1).float() * 40 - 20
    assert soft_dice(binary, target).item() == pytest.approx(0.0, abs=1e-6)


def test_callable_loss_is_recorded_by_name():
    def my_loss(p, t):
        return (p - t).abs().mean()

    fn, name = get_loss(my_loss)
    assert fn is my_loss and name.endswith("my_loss")
