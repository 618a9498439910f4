"""MRED (RS-Net sec. 3.2) against a hand computation; gradient routing of alpha."""

import math

import pytest
import torch

from resnet_switch.losses import kl_to_teacher, mred_loss


def _kl(p_logits, q_logits):
    """Hand KL(p || q), batch mean, written out with explicit sums."""
    p = torch.softmax(p_logits, 1)
    return (p * (torch.log(p) - torch.log_softmax(q_logits, 1))).sum(1).mean()


def _ce(z, y):
    return -torch.log_softmax(z, 1)[torch.arange(len(y)), y].mean()


def _hand_mred(logits, y, alpha, distill):
    w = torch.exp(alpha) / torch.exp(alpha).sum()
    z0 = sum(w[s] * logits[s] for s in range(len(logits)))
    cls = sum(_ce(z, y) for z in logits)
    ens = _ce(z0, y)
    if distill == "vanilla":
        dis = sum(_kl(z0, z) for z in logits)
    else:
        chain = [z0] + list(logits)
        S = len(logits)
        dis = 0.0
        for t in range(S):
            for s in range(t + 1, S + 1):
                dis = dis + _kl(chain[t], chain[s])
        dis = dis * 2.0 / (S + 1)
    return cls + ens + dis, cls, ens, dis


@pytest.mark.parametrize("S", [2, 3, 4, 5])
@pytest.mark.parametrize("distill", ["vanilla", "full"])
def test_mred_equals_hand_computation(S, distill):
    g = torch.Generator().manual_seed(S)
    logits = [torch.randn(6, 7, generator=g, dtype=torch.float64) * 2 for _ in range(S)]
    y = torch.randint(0, 7, (6,), generator=g)
    alpha = torch.randn(S, generator=g, dtype=torch.float64)
    got = mred_loss(logits, y, alpha, distill)
    total, cls, ens, dis = _hand_mred(logits, y, alpha, distill)
    for key, want in [("loss", total), ("cls", cls), ("ens", ens), ("dis", dis)]:
        torch.testing.assert_close(got[key], want, rtol=1e-10, atol=1e-10)


def test_full_distillation_pair_count_and_weight():
    # identical logits -> all KLs zero; perturb one low resolution and count its teachers
    S = 4
    base = torch.zeros(3, 5, dtype=torch.float64)
    logits = [base.clone() for _ in range(S)]
    logits[-1] = torch.tensor([[1.0, 0, 0, 0, 0]] * 3, dtype=torch.float64)
    alpha = torch.full((S,), -math.inf, dtype=torch.float64)
    alpha[0] = 0.0  # ensemble = highest resolution only
    out = mred_loss(logits, torch.zeros(3, dtype=torch.long), alpha, "full")
    # the last student has S teachers (z0, z1, z2, z3), each at KL(base || perturbed)
    per_pair = _kl(base, logits[-1])
    torch.testing.assert_close(out["dis"], 2.0 / (S + 1) * S * per_pair)


def test_alpha_gets_gradient_only_from_the_ensemble_loss():
    S = 3
    logits = [torch.randn(4, 6, requires_grad=True) for _ in range(S)]
    alpha = torch.zeros(S, requires_grad=True)
    y = torch.randint(0, 6, (4,))
    parts = mred_loss(logits, y, alpha, "full")
    g_total = torch.autograd.grad(parts["loss"], alpha, retain_graph=True)[0]
    g_ens = torch.autograd.grad(parts["ens"], alpha, retain_graph=True)[0]
    torch.testing.assert_close(g_total, g_ens)
    assert g_ens.abs().sum() > 0
    # and the ensemble loss sends no gradient into the resolutions' logits
    grads = torch.autograd.grad(parts["ens"], logits, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads)
    # teachers are detached: the distillation term moves each student, never the ensemble's inputs
    # through the teacher side (student 0's KL to z0 gives z0 no gradient)
    g_dis = torch.autograd.grad(parts["dis"], alpha, allow_unused=True)[0]
    assert g_dis is None or g_dis.abs().sum() == 0


def test_kl_to_teacher_detaches_teacher():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kl_to_teacher(s, t).backward()
    assert t.grad is None and s.grad is not None
    torch.testing.assert_close(kl_to_teacher(s, t), _kl(t, s))


def test_unknown_distill_mode():
    with pytest.raises(ValueError, match="method.distill"):
        mred_loss([torch.randn(2, 3)], torch.zeros(2, dtype=torch.long), torch.zeros(1), "fancy")
