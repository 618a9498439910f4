"""Slow check that the synthetic set teaches the train-test resolution discrepancy (about 2-4 min on CPU).

A tiny CNN trained only at 32 px must lose clearly at 16 px against the same CNN trained at 16 px, and
its own accuracy must fall from 32 to 16 px (fine cues fade). Fixed step counts, not wall time, so the
outcome does not depend on machine load.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_switch.data import MultiResDataModule

STEPS, BATCH, TEST_RES = 300, 128, (32, 24, 16)


def _tiny_cnn(width: int = 16, num_classes: int = 10) -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        *block(3, w, 1), *block(w, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 1),
        *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )  # fmt: skip


def _train_and_test(train_res: int) -> dict[int, float]:
    """Train at ``train_res`` for STEPS steps; top-1 accuracy on 2000 val samples at each TEST_RES."""
    torch.manual_seed(0)
    dm = MultiResDataModule(
        train_resolutions=[train_res], test_resolutions=TEST_RES, num_workers=1, batch_size=BATCH,
        crop_scale=(0.25, 1.0), train_samples=STEPS * BATCH, val_samples=2000, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    model = _tiny_cnn(num_classes=dm.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=STEPS, pct_start=0.15)
    model.train()
    for raw in dm.train_dataloader():
        batch = dm.on_after_batch_transfer(raw, 0)
        loss = F.cross_entropy(model(batch.at(train_res)), batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    correct, seen = dict.fromkeys(TEST_RES, 0), 0
    with torch.no_grad():
        for raw in dm.val_dataloader():
            batch = dm.on_after_batch_transfer(raw, 0)
            seen += len(batch)
            for r in TEST_RES:
                correct[r] += (model(batch.at(r)).argmax(1) == batch.targets).sum().item()
    return {r: c / seen for r, c in correct.items()}


@pytest.mark.slow
def test_synthetic_shows_train_test_resolution_discrepancy():
    acc_hi, acc_lo = _train_and_test(32), _train_and_test(16)
    print(f"\ntrained@32 -> {acc_hi}\ntrained@16 -> {acc_lo}")
    assert acc_hi[32] > 0.6 and acc_lo[16] > 0.35  # learnable, far above chance (0.1)
    assert acc_hi[32] > acc_hi[16] + 0.2  # fine cues fade: accuracy falls with resolution
    assert acc_hi[16] < acc_lo[16] - 0.15  # train-test scale discrepancy: the 32-px model loses at 16 px
