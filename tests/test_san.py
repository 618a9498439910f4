"""SAN: scale-conditioned convs, their factories, the scale-distillation step and materialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from resnet_switch.data.multires import MultiResBatch
from resnet_switch.layers.generated_conv import linear_generated_conv2d, workspace_like
from resnet_switch.layers.scale_conv import (
    LinearMeta,
    MLPMeta,
    PrivateConv2d,
    ScaleConv2d,
    encoding_resolution,
    kaiming_std,
    scale_encoding,
)
from resnet_switch.methods import build_method
from resnet_switch.models import create_model, load_plain_weights
from resnet_switch.switch import SubnetConfig, SwitchState

RES = [32, 24, 16]


def make_conv(cin=4, cout=6, k=3, groups=1, meta="linear", resolutions=RES, bias=False, **kw):
    state = SwitchState(resolutions)
    return ScaleConv2d(cin, cout, k, state, padding=1, groups=groups, bias=bias, meta=meta, **kw), state


# ---- kernel generation -------------------------------------------------------------------------

def test_linear_kernel_is_eps_w_plus_b_and_conv_uses_it():
    conv, state = make_conv(bias=True)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 4, 8, 8)
    for r in RES:
        state.activate(SubnetConfig(r))
        eps = 0.1 * r / 32
        expected = eps * conv.meta.weight + conv.meta.bias
        torch.testing.assert_close(conv.kernel(), expected)  # fused eps*W+b: may differ in the last bit
        torch.testing.assert_close(conv(x), F.conv2d(x, expected, conv.bias, 1, 1))
    # different scales really give different kernels
    assert not torch.equal(conv.meta(scale_encoding(32)), conv.meta(scale_encoding(16)))


def test_mlp_kernel_matches_manual_computation():
    conv, state = make_conv(meta="mlp8")
    m = conv.meta
    assert isinstance(m, MLPMeta) and m.hidden_weight.shape == (8, 1) and m.out_weight.shape == (6 * 4 * 9, 8)
    state.activate(SubnetConfig(24))
    eps = 0.1 * 24 / 32
    hidden = torch.relu(eps * m.hidden_weight[:, 0] + m.hidden_bias)
    manual = (m.out_weight @ hidden + m.out_bias).view(6, 4, 3, 3)
    torch.testing.assert_close(conv.kernel(), manual)
    assert make_conv(meta="mlp16")[0].meta.hidden_weight.shape == (16, 1)
    with pytest.raises(ValueError, match="meta-learner"):
        make_conv(meta="mlp")


@pytest.mark.parametrize("meta", ["linear", "mlp8"])
def test_meta_gradients_match_finite_differences(meta):
    conv, state = make_conv(cin=2, cout=2, k=2, meta=meta)
    conv = conv.double()
    state.activate(SubnetConfig(24))
    names = [n for n, _ in conv.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in conv.parameters())
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    def run(*args):
        return functional_call(conv, dict(zip(names, args[:-1])), (args[-1],))

    assert torch.autograd.gradcheck(run, (*params, x), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("meta", ["linear", "mlp8"])
@pytest.mark.parametrize("cin,cout,groups", [(4, 4, 4), (4, 6, 2), (4, 8, 1)])
def test_grouped_and_depthwise_shapes(meta, cin, cout, groups):
    conv, state = make_conv(cin=cin, cout=cout, groups=groups, meta=meta)
    assert conv.kernel().shape == (cout, cin // groups, 3, 3)
    x = torch.randn(2, cin, 7, 7)
    y = conv(x)
    assert y.shape == (2, cout, 7, 7)
    torch.testing.assert_close(y, F.conv2d(x, conv.kernel(), None, 1, 1, 1, groups))
    plain = conv.to_plain()
    assert isinstance(plain, nn.Conv2d) and plain.groups == groups
    torch.testing.assert_close(plain(x), y)


def test_linear_meta_holds_twice_the_conv_parameters():
    conv, _ = make_conv(cin=8, cout=16, groups=2)
    assert sum(p.numel() for p in conv.parameters()) == 2 * 16 * 4 * 9


def test_init_gives_kaiming_scale_kernels():
    for meta in ("linear", "mlp8"):
        conv, state = make_conv(cin=64, cout=64, meta=meta, resolutions=[224, 192, 160, 128, 96])
        target = kaiming_std(conv.kernel_shape)
        stds = []
        for r in state.train_resolutions:
            state.activate(SubnetConfig(r))
            stds.append(conv.kernel().std().item() / target)
        assert 0.85 < min(stds) and max(stds) < 1.15, (meta, stds)
        assert 0.93 < math.sqrt(sum(s * s for s in stds) / len(stds)) < 1.07, (meta, stds)


# ---- generated conv: kernel regenerated in backward, never saved --------------------------------

def _reference_conv(x, weight, bias, eps, conv_bias=None, **conv):
    """Plain autograd: keeps ``eps * weight + bias`` for backward."""
    return F.conv2d(x, eps * weight + bias, conv_bias, **conv)


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("conv", [dict(stride=1, padding=1, groups=1), dict(stride=2, padding=0, groups=2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_generated_conv_gradients_equal_plain_autograd(conv, channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x0 = torch.randn(3, 4, 7, 7).to(memory_format=fmt)
    w0, b0 = (torch.randn(6, 4 // conv["groups"], 3, 3).to(memory_format=fmt) for _ in range(2))
    cb0, g = torch.randn(6), None
    grads = []
    for fn in (_reference_conv, linear_generated_conv2d):
        x, w, b, cb = _leaves(x0, w0, b0, cb0)
        y = fn(x, w, b, 0.35, cb, **conv)
        g = torch.randn_like(y) if g is None else g
        y.backward(g)
        grads.append((y.detach(), x.grad, w.grad, b.grad, cb.grad))
    for ref, out in zip(*grads):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1][2], 0.35 * grads[1][3], rtol=1e-6, atol=0)  # dL/dW = eps dL/db


def test_generated_conv_gradcheck_float64():
    torch.manual_seed(0)
    x, w, b, cb = _leaves(*(torch.randn(s, dtype=torch.float64) for s in [(2, 4, 5, 5), (4, 2, 3, 3),
                                                                        (4, 2, 3, 3), (4,)]))

    def run(x, w, b, cb):
        return linear_generated_conv2d(x, w, b, 0.3, cb, stride=2, padding=1, groups=2)

    assert torch.autograd.gradcheck(run, (x, w, b, cb), eps=1e-6, atol=1e-6)
    x_const = x.detach()  # no dL/dx: backward skips regenerating the kernel
    assert torch.autograd.gradcheck(lambda w, b: run(x_const, w, b, None), (w, b), eps=1e-6, atol=1e-6)


def _saved_tensors(fn):
    """Tensors autograd saves for backward while ``fn()`` runs."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


def test_generated_kernel_is_not_saved_for_backward():
    conv, state = make_conv(cin=8, cout=16, bias=True)
    conv.train()
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    own = {t.data_ptr() for t in [x, *conv.parameters()]}
    kernel_bytes = 16 * 8 * 9 * 4
    _, saved = _saved_tensors(lambda: conv(x))
    assert saved and all(t.data_ptr() in own for t in saved)  # only x and parameters, nothing fresh
    # the plain autograd formulation does keep a fresh kernel: the check above would catch it
    _, ref_saved = _saved_tensors(lambda: _reference_conv(x, conv.meta.weight, conv.meta.bias, 0.1, conv.bias,
                                                          padding=1))
    fresh = [t for t in ref_saved if t.data_ptr() not in own]
    assert any(t.shape == conv.kernel_shape for t in fresh)
    assert sum(t.numel() * t.element_size() for t in fresh) >= kernel_bytes


def test_generated_conv_twice_before_backward_and_version_check():
    """Two forwards at different scales, one backward (the workspace is reused in between)."""
    conv, state = make_conv(bias=True)
    x = torch.randn(2, 4, 6, 6)
    outs = []
    for r in (32, 16):
        state.activate(SubnetConfig(r))
        outs.append(conv(x))
    before = outs[0].detach().clone()
    (outs[0].square().sum() + outs[1].sum()).backward()
    torch.testing.assert_close(outs[0].detach(), before)
    w, b, cb = _leaves(conv.meta.weight, conv.meta.bias, conv.bias)
    ref = [_reference_conv(x, w, b, scale_encoding(r), cb, padding=1) for r in (32, 16)]
    (ref[0].square().sum() + ref[1].sum()).backward()
    for p, q in [(conv.meta.weight, w), (conv.meta.bias, b), (conv.bias, cb)]:
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    y = conv(x)
    with torch.no_grad():
        conv.meta.weight.add_(1.0)  # in-place change between forward and backward: refused, as autograd does
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_generated_conv_gradients_reach_accumulate_grad_hooks():
    """DDP reduces gradients in post-accumulate hooks: they must fire for both meta parameters."""
    conv, _ = make_conv()
    fired = []
    for p in conv.meta.parameters():
        p.register_post_accumulate_grad_hook(lambda p: fired.append(p))
    conv(torch.randn(1, 4, 5, 5)).sum().backward()
    assert {id(p) for p in fired} == {id(conv.meta.weight), id(conv.meta.bias)}


def test_generated_conv_under_cpu_autocast():
    conv, _ = make_conv()
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        ref = F.conv2d(x, conv.kernel(), None, 1, 1)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref)
    y.float().sum().backward()
    assert x.grad.dtype == conv.meta.weight.grad.dtype == torch.float32
    assert torch.isfinite(conv.meta.weight.grad).all() and conv.meta.bias.grad.abs().sum() > 0


def test_workspace_like_matches_layout_and_is_reused():
    w = torch.randn(6, 4, 3, 3).to(memory_format=torch.channels_last)
    ws = workspace_like(w)
    assert ws.shape == w.shape and ws.stride() == w.stride() and ws.dtype == w.dtype
    assert workspace_like(torch.randn(2, 2, 1, 1)).data_ptr() == ws.data_ptr()  # one buffer per thread/dtype
    assert workspace_like(w.double()).data_ptr() != ws.data_ptr()
    assert workspace_like(torch.randn(4, 6)[:, :3]) is None  # not dense: caller allocates


# ---- scale encoding ----------------------------------------------------------------------------

@pytest.mark.parametrize("resolutions", [[224, 96], [256, 224, 160, 96], [224, 192, 160, 128, 96]])
def test_encoding_depends_on_resolution_not_list_position(resolutions):
    conv, state = make_conv(resolutions=resolutions)
    state.activate(SubnetConfig(224))
    assert conv.encoding() == pytest.approx(0.7)
    state.activate(SubnetConfig(96))
    assert conv.encoding() == pytest.approx(0.3)


def test_proxy_and_ideal_encodings():
    conv, state = make_conv()
    x = torch.randn(1, 4, 30, 30)
    conv.eval()
    for r in RES:  # training resolutions: proxy == ideal
        state.activate(SubnetConfig(r))
        state.set_scale_encoding("nearest")
        proxy = conv(torch.randn(1, 4, r, r).fill_(1.0))
        state.set_scale_encoding("exact")
        assert torch.equal(proxy, conv(torch.ones(1, 4, r, r)))
    state.activate(SubnetConfig(30))  # unseen: nearest is 32
    state.set_scale_encoding("nearest")
    assert encoding_resolution(state) == 32 and conv.encoding() == pytest.approx(0.1)
    proxy = conv(x)
    state.set_scale_encoding("exact")
    assert encoding_resolution(state) == 30 and conv.encoding() == pytest.approx(0.1 * 30 / 32)
    assert not torch.allclose(proxy, conv(x))
    fresh = SwitchState(state.train_resolutions)  # default: exact
    fresh.activate(SubnetConfig(30))
    assert fresh.scale_encoding == "exact" and encoding_resolution(fresh) == 30


# ---- eval-time cache ---------------------------------------------------------------------------

@pytest.mark.parametrize("foreach", [False, True])
def test_eval_cache_reused_and_invalidated_by_optimizer_step(foreach):
    conv, state = make_conv()
    opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, foreach=foreach)
    conv.eval()
    with torch.no_grad():
        k1 = conv.kernel()
        assert conv.kernel() is k1
        state.activate(SubnetConfig(16))
        k16 = conv.kernel()
        assert k16 is not k1 and conv.kernel() is k16
        state.activate(SubnetConfig(32))
        assert conv.kernel() is k1  # one cache entry per encoding resolution
    with torch.enable_grad():  # eval mode with grad enabled: generated fresh, never cached
        assert conv.kernel() is not k1 and conv.kernel().requires_grad
        conv(torch.randn(2, 4, 6, 6)).square().mean().backward()
    opt.step()  # still in eval mode: only the parameter versions tell the cache
    with torch.no_grad():
        k2 = conv.kernel()
        assert k2 is not k1 and not torch.equal(k2, k1)
        torch.testing.assert_close(k2, 0.1 * 32 / 32 * conv.meta.weight + conv.meta.bias)


def test_training_mode_generates_every_forward():
    conv, _ = make_conv()
    conv.eval()
    with torch.no_grad():
        conv.kernel()
    conv.train()
    assert not conv._kernel_cache  # train() frees the eval cache
    with torch.no_grad():
        assert conv.kernel() is not conv.kernel()


def test_eval_cache_invalidated_by_load_state_dict():
    conv, state = make_conv(meta="mlp8")
    other, _ = make_conv(meta="mlp8")
    conv.eval()
    with torch.no_grad():
        k1 = conv.kernel()
        conv.load_state_dict(other.state_dict())
        k2 = conv.kernel()
    assert k2 is not k1
    torch.testing.assert_close(k2, other.meta(scale_encoding(32)))


def test_load_plain_starts_every_scale_at_the_pretrained_kernel():
    for meta in ("linear", "mlp8"):
        conv, state = make_conv(meta=meta, bias=True)
        plain = nn.Conv2d(4, 6, 3, padding=1, bias=True)
        conv.load_plain(plain)
        for r in (32, 24, 16, 40):
            state.activate(SubnetConfig(r))
            torch.testing.assert_close(conv.kernel(), plain.weight.detach())
        torch.testing.assert_close(conv.bias, plain.bias)


# ---- scale distillation ------------------------------------------------------------------------

def _hand_scale_distillation(logits_high_to_low, y):
    """SAN eq. 3-4 with ``alpha = beta = 1``, written out: ``ce = sum_i CE(z_i, y)`` and
    ``sd = sum_i sum_{j < i} KL(p_j || p_i)`` with every teacher ``p_j`` (a higher resolution) detached."""
    logp = [torch.log_softmax(z, 1) for z in logits_high_to_low]
    ce = sum(-lp[torch.arange(len(y)), y].mean() for lp in logp)
    sd = sum((logp[j].detach().exp() * (logp[j].detach() - logp[i])).sum(1).mean()
             for i in range(len(logp)) for j in range(i))
    return ce, sd


def _san_net(seed=0, **layer_kwargs):
    torch.manual_seed(seed)
    return create_model("resnet20", RES, layers="san", num_classes=10, layer_kwargs=layer_kwargs)


def _grads(net):
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("distill", [True, False])
def test_san_step_equals_one_backward_of_the_whole_loss(distill):
    method = build_method("san", RES, distill=distill)
    net = _san_net(**method.layer_kwargs())
    torch.manual_seed(1)
    batch = MultiResBatch(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    calls = []

    def backward(loss):
        calls.append(loss.detach())
        loss.backward()

    logs = method.training_step(net, batch, backward)
    assert len(calls) == 3 and method.per_config_backward
    step_grads = _grads(net)
    net.zero_grad(set_to_none=True)
    logits = []
    for r in RES:
        net.set_active(SubnetConfig(r))
        logits.append(net(batch.at(r)))
    ce, sd = _hand_scale_distillation(logits, batch.targets)
    total = ce + sd if distill else ce
    total.backward()
    torch.testing.assert_close(logs["loss"], total.detach())
    torch.testing.assert_close(sum(logs[f"ce@{r}"] for r in RES), ce.detach())
    if distill:
        assert sd > 0
        torch.testing.assert_close(logs["kd@24"] + logs["kd@16"], sd.detach())
    else:
        assert not any(k.startswith("kd@") for k in logs)
    ref_grads = _grads(net)
    assert step_grads.keys() == ref_grads.keys() and len(step_grads) > 0
    for name in ref_grads:
        torch.testing.assert_close(step_grads[name], ref_grads[name], rtol=1e-4, atol=1e-6)


def test_san_method_layer_kwargs():
    assert build_method("san", RES).layers == "san"
    assert "meta_roles" not in build_method("san", RES).layer_kwargs()
    kw = build_method("san", RES, meta="mlp16", meta_roles=["stem", "body"], private_bn=False).layer_kwargs()
    assert kw == {"meta": "mlp16", "scale": 0.1, "private_bn": False, "meta_roles": ["stem", "body"]}
    private = build_method("san", RES, conv="private")
    assert private.layers == "private_conv" and private.layer_kwargs() == {"private_bn": True}
    assert build_method("san", RES, meta_roles="all").layer_kwargs()["meta_roles"] == "all"
    with pytest.raises(ValueError, match="method.conv"):
        build_method("san", RES, conv="shared")
    with pytest.raises(ValueError, match="meta_roles"):
        build_method("san", RES, meta_roles="body")


def test_meta_roles_choose_which_convs_are_generated():
    net = _san_net(meta_roles=["stem", "body", "shortcut"])
    assert isinstance(net.net.conv1, ScaleConv2d)
    net = _san_net(meta_roles=["shortcut"])
    metas = [n for n, m in net.net.named_modules() if isinstance(m, ScaleConv2d)]
    assert metas == ["layer2.0.downsample.0", "layer3.0.downsample.0"]


# ---- factories and materialisation -------------------------------------------------------------

def _train_bn_sets(net, steps=1):
    """A few training forwards so every private BN set holds different running statistics."""
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            for r in RES:
                net.set_active(SubnetConfig(r))
                net(torch.randn(4, 3, r, r) * (r / 16))
    net.eval()


@pytest.mark.parametrize("name,roles", [("resnet20", None), ("mobilenetv2", "all")])
def test_materialised_model_equals_switchable(name, roles):
    torch.manual_seed(0)
    layer_kwargs = {} if roles is None else {"meta_roles": roles}
    kwargs = {"small_input": True, "width_mult": 0.5} if name == "mobilenetv2" else {}
    net = create_model(name, RES, layers="san", num_classes=10, layer_kwargs=layer_kwargs, **kwargs)
    metas = [m for m in net.modules() if isinstance(m, ScaleConv2d)]
    assert isinstance(net.net.fc if name == "resnet20" else net.net.classifier[1], nn.Linear)
    if name == "resnet20":
        assert isinstance(net.net.conv1, nn.Conv2d) and len(metas) == 20  # 18 body + 2 shortcut
        assert isinstance(net.net.layer2[0].downsample[0], ScaleConv2d)
    else:
        assert isinstance(net.net.features[0][0], ScaleConv2d)
        assert not any(type(m) is nn.Conv2d for m in net.modules())  # every conv is meta
    _train_bn_sets(net)
    for r, encoding, bn_mode in [(32, "nearest", "nearest"), (24, "exact", "nearest"), (16, "nearest", "nearest"),
                                 (28, "nearest", "nearest"), (20, "exact", "interpolate")]:
        net.state.set_scale_encoding(encoding)
        cfg = SubnetConfig(r)
        x = torch.randn(2, 3, r, r)
        plain = net.materialize(cfg, bn_mode=bn_mode)
        assert not any(hasattr(m, "to_plain") for m in plain.modules())
        with torch.no_grad(), net.switch(cfg, bn_mode=bn_mode):
            expected = net(x)
            torch.testing.assert_close(plain(x), expected, rtol=1e-4, atol=1e-5)


def test_warm_start_from_plain_weights_gives_the_plain_model_at_every_scale():
    src = _san_net(seed=0)
    _train_bn_sets(src)
    plain = src.materialize(SubnetConfig(32))
    dst = _san_net(seed=1)
    load_plain_weights(dst, plain.state_dict())
    dst.eval()
    for r in (32, 20):
        x = torch.randn(2, 3, r, r)
        with torch.no_grad(), dst.switch(SubnetConfig(r)):
            torch.testing.assert_close(dst(x), plain(x), rtol=1e-4, atol=1e-5)


def test_private_conv_ablation_runs_and_materialises():
    method = build_method("san", RES, conv="private")
    torch.manual_seed(0)
    net = create_model("resnet20", RES, layers=method.layers, num_classes=10, layer_kwargs=method.layer_kwargs())
    convs = [m for m in net.modules() if isinstance(m, PrivateConv2d)]
    assert convs and len(convs[0].convs) == 3
    assert not torch.equal(convs[0].convs[0].weight, convs[0].convs[1].weight)  # independent init
    batch = MultiResBatch(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    logs = method.training_step(net, batch, lambda loss: loss.backward())
    assert torch.isfinite(logs["loss"]) and set(logs) >= {"loss", "ce@32", "kd@16"}
    assert all(c.convs[k].weight.grad is not None for c in convs for k in range(3))
    net.eval()
    for r in (24, 28):
        x = torch.randn(2, 3, r, r)
        plain = net.materialize(SubnetConfig(r))
        assert not any(isinstance(m, PrivateConv2d) for m in plain.modules())
        with torch.no_grad(), net.switch(SubnetConfig(r)):
            torch.testing.assert_close(plain(x), net(x))


# nearest training resolution of each test resolution (RES = 32, 24, 16): its own, or the nearest one
PRIVATE_INDEX = {32: 0, 24: 1, 16: 2, 30: 0, 40: 0, 21: 1, 18: 2, 8: 2}


@pytest.mark.parametrize("stride,groups,bias", [(1, 1, False), (2, 2, True)])
def test_private_conv_is_torchs_conv_with_the_resolutions_own_weights(stride, groups, bias):
    """SAN Table 4: at every resolution the layer is ``F.conv2d`` with the kernel (and bias) private to
    that training resolution, or to the nearest one for an unseen resolution."""
    state = SwitchState(RES)
    torch.manual_seed(0)
    conv = PrivateConv2d(4, 6, 3, state, stride=stride, padding=1, groups=groups, bias=bias)
    for r, k in PRIVATE_INDEX.items():
        x = torch.randn(2, 4, r, r)
        state.activate(SubnetConfig(r))
        private = conv.convs[k]
        want = F.conv2d(x, private.weight, private.bias, stride=stride, padding=1, groups=groups)
        torch.testing.assert_close(conv(x), want, rtol=0, atol=0, msg=f"{r} px")
    with_one = PrivateConv2d(4, 6, 3, SwitchState([16]), padding=1, bias=True)
    plain = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    plain.load_state_dict({key.removeprefix("convs.0."): v for key, v in with_one.state_dict().items()})
    for r in (16, 9, 24):  # one training resolution: a plain conv at every resolution
        with_one.state.activate(SubnetConfig(r))
        x = torch.randn(1, 4, r, r)
        torch.testing.assert_close(with_one(x), plain(x), rtol=0, atol=0)


@torch.no_grad()
def test_private_conv_network_is_the_plain_network_of_each_resolutions_convs():
    """The private-conv ResNet-20 at a resolution equals the private-BN ResNet-20 (torch's own
    ``nn.Conv2d`` everywhere) loaded with that resolution's private convs and the same BN sets."""
    method = build_method("san", RES, conv="private")
    torch.manual_seed(0)
    net = create_model("resnet20", RES, layers=method.layers, num_classes=10, layer_kwargs=method.layer_kwargs())
    _train_bn_sets(net)
    net.eval()
    reference = create_model("resnet20", RES, layers="private_bn", num_classes=10).eval()
    assert not any(isinstance(m, (PrivateConv2d, ScaleConv2d)) for m in reference.modules())
    state = net.state_dict()
    for r, k in PRIVATE_INDEX.items():
        own = f".convs.{k}."
        reference.load_state_dict({key.replace(own, "."): v for key, v in state.items()
                                   if ".convs." not in key or own in key}, strict=True)
        x = torch.randn(2, 3, r, r)
        with net.switch(SubnetConfig(r)), reference.switch(SubnetConfig(r)):
            torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-5, msg=f"{r} px")


def test_linear_meta_module_contract():
    meta = LinearMeta((2, 3, 1, 1))
    meta.reset_parameters(1.0, 0.25)
    kernel = torch.randn(2, 3, 1, 1)
    meta.load_kernel(kernel)
    assert torch.equal(meta(0.7), kernel) and torch.equal(meta(0.3), kernel)
