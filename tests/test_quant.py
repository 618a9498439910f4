"""LQ-Nets quantization: quantizer numerics against hand computations and torch.linalg.lstsq, the
straight-through gradients, the quantized layers behind the factory, training, checkpoints, export."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_switch import export
from resnet_switch.data.multires import MultiResBatch
from resnet_switch.deploy.quantized_state import PACKED_FORMAT, load_quantized_state
from resnet_switch.layers.lq import (
    LQActQuantizer,
    LQWeightQuantizer,
    act_levels,
    act_qem_target,
    code_table,
    dequantize_codes,
    initial_act_basis,
    initial_weight_basis,
    quantize_act,
    quantize_weight,
    sorted_levels,
)
from resnet_switch.layers.quant import LQConv2d, quantized_convs
from resnet_switch.methods import build_method
from resnet_switch.models import create_model, load_plain_weights
from resnet_switch.switch import SubnetConfig, SwitchState
from resnet_switch.training.checkpointing import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    make_checkpoint,
    rebuild_from_checkpoint,
)

from .ckpt_factory import randomize_bn, write_checkpoint
from .helpers import needs

W2A2 = {"weight_bits": 2, "act_bits": 2}


# ------------------------------------------------------------------------- levels and thresholds
def test_code_table_bit_order():
    # row i holds bit j of i in column j; weights map bit 0 -> -1
    assert code_table(2, signed=True).tolist() == [[-1, -1], [1, -1], [-1, 1], [1, 1]]
    assert code_table(2, signed=False).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_weight_levels_thresholds_and_codes_by_hand():
    # basis (0.75, 0.25): codes 0..3 give -1.0, +0.5, -0.5, +1.0 -> sorted (-1, -0.5, 0.5, 1),
    # code order (0, 2, 1, 3), thresholds (-0.75, 0, 0.75). Values equal to a threshold stay below.
    basis = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    levels, order = sorted_levels(basis, code_table(2, signed=True))
    assert levels[0].tolist() == [-1.0, -0.5, 0.5, 1.0] and order[0].tolist() == [0, 2, 1, 3]
    w = torch.tensor([[-2.0, -0.75, -0.7, 0.0, 0.1, 0.75, 0.8],
                      [-0.6, -0.5, -0.4, 0.0, 0.4, 0.5, 0.6]])
    q, level_index, order, _ = quantize_weight(w, basis)
    assert q[0].tolist() == [-1.0, -1.0, -0.5, -0.5, 0.5, 0.5, 1.0]
    assert level_index[0].tolist() == [0, 0, 1, 1, 2, 2, 3]
    # channel 1, basis (0.5, 0.5): levels (-1, 0, 0, 1), thresholds (-0.5, 0, 0.5)
    assert q[1].tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    quantizer = LQWeightQuantizer(2, 2, kernel_numel=1)
    quantizer.basis.copy_(basis)
    codes = quantizer.codes(w)
    assert codes.dtype == torch.uint8 and codes[0].tolist() == [0, 0, 2, 2, 1, 1, 3]
    assert torch.equal(dequantize_codes(codes, basis), q)


def test_act_levels_thresholds_and_output_by_hand():
    # basis (0.5, 1.0), codes {0,1}^2: levels 0, 0.5, 1.0, 1.5; thresholds 0.25, 0.75, 1.25
    levels, thresholds, level_codes = act_levels(torch.tensor([0.5, 1.0]))
    assert levels.tolist() == [0.0, 0.5, 1.0, 1.5] and thresholds.tolist() == [0.25, 0.75, 1.25]
    assert level_codes.tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]
    x = torch.tensor([-1.0, 0.25, 0.3, 1.0, 1.25, 1.3, 2.0])
    sweep = quantize_act(x, levels, thresholds, stats=True)
    assert sweep.accumulated.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 1.5, 1.5]
    # per level (index 0, 0, 1, 2, 2, 3, 3): counts and sums of the inputs
    assert sweep.counts.tolist() == [2, 1, 2, 2]
    assert sweep.sums.tolist() == pytest.approx([-0.75, 0.3, 2.25, 3.3], abs=1e-6)
    y = sweep.accumulated
    plain = LQActQuantizer(2).eval()
    plain.basis.copy_(torch.tensor([0.5, 1.0]))
    assert plain.to_plain()(x).tolist() == y.tolist()  # the export's where-chain agrees


def test_initial_bases():
    k = 0.6745 * math.sqrt(2.0 / (3 * 3 * 16)) / 2  # n = k*k*out_channels, / 2^(K-1)
    assert torch.allclose(initial_weight_basis(16, 2, 9), torch.tensor([[k, 2 * k]] * 16))
    assert torch.allclose(initial_act_basis(2), torch.tensor([0.6745 * 2 / 3, 2 * 0.6745 * 2 / 3]))
    assert torch.allclose(initial_act_basis(3), torch.tensor([1.0, 2.0, 4.0]) * 0.6745 * 2 / 7)


# -------------------------------------------------------------------------------------------- QEM
def test_weight_qem_target_equals_lstsq_with_ridge():
    torch.manual_seed(1)
    w = torch.randn(3, 40) * 0.1
    basis = torch.tensor([[0.03, 0.08], [0.05, 0.1], [0.02, 0.12]])
    q, level_index, order, target = quantize_weight(w, basis, qem=True, ridge=1e-4)
    codes = code_table(2, signed=True)[order.gather(1, level_index)]  # (C, M, K): B per channel
    for c in range(3):
        # (B^T B + d I)^-1 (B^T x + d v) is the least-squares solution of [B; sqrt(d) I] v = [x; sqrt(d) v_c]
        a = torch.cat([codes[c], 1e-2 * torch.eye(2)]).double()
        b = torch.cat([w[c], 1e-2 * basis[c]]).double()
        expected = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
        assert torch.allclose(target[c].double(), expected, atol=1e-6)
        assert torch.allclose((codes[c] @ basis[c]), q[c])  # the codes reproduce the quantized values


def test_weight_qem_one_bit_by_hand():
    # K = 1: codes are sign(w), target = (sum |w| + d v) / (M + d)
    w = torch.tensor([[-0.5, 0.3, 0.2, -0.4]])
    basis = torch.tensor([[0.1]])
    target = quantize_weight(w, basis, qem=True, ridge=1e-4).target
    assert target.item() == pytest.approx((1.4 + 1e-4 * 0.1) / (4 + 1e-4), rel=1e-6)


def test_act_qem_target_equals_lstsq_without_ridge():
    torch.manual_seed(2)
    x = torch.relu(torch.randn(2, 3, 8, 8))
    basis = torch.tensor([0.4, 0.9])
    levels, thresholds, level_codes = act_levels(basis)
    sweep = quantize_act(x, levels, thresholds, stats=True)
    target = act_qem_target(sweep.counts, sweep.sums, level_codes, basis)
    index = torch.bucketize(x, thresholds)  # an independent level assignment (values equal to t stay below)
    assert torch.allclose(sweep.accumulated, levels[index])
    b = level_codes[index.reshape(-1)].double()
    expected = torch.linalg.lstsq(b, x.reshape(-1, 1).double()).solution[:, 0]
    assert torch.allclose(target.double(), expected, atol=1e-5)


def test_training_forward_moves_bases_by_the_moving_average():
    torch.manual_seed(3)
    conv = LQConv2d(4, 6, 3, padding=1, weight_bits=2, act_bits=2).train()
    x = torch.relu(torch.randn(2, 4, 5, 5))
    w_basis, a_basis = conv.weight_quant.basis.clone(), conv.act_quant.basis.clone()
    w_target = quantize_weight(conv.weight.detach().reshape(6, -1), w_basis, qem=True).target
    levels, thresholds, level_codes = act_levels(a_basis)
    sweep = quantize_act(x, levels, thresholds, stats=True)
    a_target = act_qem_target(sweep.counts, sweep.sums, level_codes, a_basis)
    conv(x)
    assert torch.allclose(conv.weight_quant.basis, 0.9 * w_basis + 0.1 * w_target)
    assert torch.allclose(conv.act_quant.basis, 0.9 * a_basis + 0.1 * a_target)
    conv.eval()(x)  # eval: no update
    assert torch.allclose(conv.act_quant.basis, 0.9 * a_basis + 0.1 * a_target)


def test_weight_basis_updates_once_per_weight_version():
    conv = LQConv2d(4, 6, 3, weight_bits=2).train()
    x = torch.randn(2, 4, 5, 5)
    conv(x)
    after_first = conv.weight_quant.basis.clone()
    conv(x)  # another resolution of the same step: same weights -> same codes, no second update
    assert torch.equal(conv.weight_quant.basis, after_first)
    with torch.no_grad():
        conv.weight.mul_(1.5)  # an optimizer step: a new weight version
    conv(x)
    assert not torch.equal(conv.weight_quant.basis, after_first)


def test_singular_activation_system_keeps_the_basis():
    quantizer = LQActQuantizer(2).train()
    before = quantizer.basis.clone()
    quantizer(torch.zeros(2, 3, 4, 4))  # every value at level 0: B^T B = 0
    assert torch.equal(quantizer.basis, before)


def test_act_basis_update_highest_only_at_the_highest_resolution():
    state = SwitchState([32, 16])
    quantizer = LQActQuantizer(2, state, update="highest").train()
    x = torch.relu(torch.randn(2, 3, 4, 4))
    before = quantizer.basis.clone()
    state.activate(SubnetConfig(16))
    quantizer(x)
    assert torch.equal(quantizer.basis, before)
    state.activate(SubnetConfig(32))
    quantizer(x)
    assert not torch.equal(quantizer.basis, before)


# ------------------------------------------------------------------------------------ gradients
def test_weight_gradient_is_straight_through():
    torch.manual_seed(4)
    conv = LQConv2d(3, 4, 3, weight_bits=2).eval()
    x = torch.randn(2, 3, 6, 6)
    conv(x).square().sum().backward()
    q = conv.quantized_weight().requires_grad_(True)
    F.conv2d(x, q).square().sum().backward()
    assert torch.allclose(conv.weight.grad, q.grad)  # dL/dw = dL/dq (identity)


def test_act_gradient_is_identity_clipped_above_the_top_level():
    quantizer = LQActQuantizer(2).eval()
    quantizer.basis.copy_(torch.tensor([0.5, 1.0]))  # top level 1.5
    x = torch.tensor([-1.0, 0.2, 1.0, 1.5, 1.6, 3.0], requires_grad=True)
    (quantizer(x) * torch.arange(1.0, 7.0)).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]


# ------------------------------------------------------------------------ layers behind the factory
def test_32_bits_is_exactly_the_float_network():
    torch.manual_seed(5)
    float_net = create_model("resnet20", [16, 12], base_width=4, num_classes=5).eval()
    torch.manual_seed(5)
    off = create_model("resnet20", [16, 12], base_width=4, num_classes=5,
                       quant={"weight_bits": 32, "act_bits": 32}).eval()
    assert not quantized_convs(off) and off.state_dict().keys() == float_net.state_dict().keys()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(off(x), float_net(x))


def test_stem_and_classifier_stay_float_and_bn_stays_private():
    net = create_model("resnet20", [16, 12], base_width=4, num_classes=5, quant=W2A2)
    assert type(net.net.conv1) is nn.Conv2d and type(net.net.fc) is nn.Linear
    convs = [m for m in net.net.modules() if isinstance(m, nn.Conv2d)]
    assert len(quantized_convs(net)) == len(convs) - 1  # every conv but the stem
    assert len(net.net.layer1[0].bn1.sets) == 2  # private BN per resolution
    # weights-only ("2/32"): no activation quantizer
    w_only = create_model("resnet20", [16], layers="plain", base_width=4, quant={"weight_bits": 2})
    assert all(m.act_quant is None and m.weight_quant is not None for _, m in quantized_convs(w_only))


@pytest.mark.parametrize("method", ["san", "mutualnet"])
def test_unsupported_methods_are_refused_in_one_line(method):
    with pytest.raises(ValueError, match=rf"^quant: method={method} is not supported with quant=lq; use"):
        create_model("resnet20", method=build_method(method, [16, 12]), num_classes=10, quant=W2A2)


@pytest.mark.parametrize("quant,field", [({"weight_bits": 5}, "quant.weight_bits"),
                                         ({"act_bits": 0}, "quant.act_bits"),
                                         ({"act_basis_update": "lowest"}, "quant.act_basis_update"),
                                         ({"bits": 2}, "quant.bits")])
def test_bad_quant_settings_name_the_field(quant, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        create_model("resnet20", [16], quant=quant)


def test_preresnet18_layout_and_quantized_composition():
    net = create_model("preresnet18", [64, 48], num_classes=7, quant=W2A2)
    body = net.net
    assert body.layer1[0].preact is None and body.layer1[0].downsample is None  # 'first' block
    assert body.layer2[0].preact is None and body.layer2[0].downsample is not None  # strided block 0
    assert body.layer2[1].preact is not None and body.layer2[1].downsample is None
    assert all(type(stage[-1]).__name__ == "BNReLU" for stage in (body.layer1, body.layer2, body.layer3, body.layer4))
    assert len(quantized_convs(net)) == 16 + 3  # block convs + projections; stem float
    x = torch.randn(2, 3, 64, 64)
    with net.switch(SubnetConfig(48)):
        assert net.eval()(F.interpolate(x, size=48)).shape == (2, 7)
    net.train()
    net(x).sum().backward()
    grad = body.layer4[1].conv2.weight.grad  # through both quantizers (straight-through)
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_resnet50_composes_with_quant():
    net = create_model("resnet50", [32], layers="plain", num_classes=3, quant={"weight_bits": 3, "act_bits": 4})
    body = net.net
    assert type(body.conv1) is nn.Conv2d and isinstance(body.layer2[0].downsample[0], LQConv2d)
    assert body.layer3[0].conv2.weight_quant.basis.shape == (256, 3) and body.layer3[0].conv2.act_quant.bits == 4
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_preresnet18_has_resnet18_convs():
    from resnet_switch.evaluation.costs import count_costs

    pre, _ = count_costs(create_model("preresnet18", [96], layers="plain"), SubnetConfig(96))
    plain, _ = count_costs(create_model("resnet18", [96], layers="plain"), SubnetConfig(96))
    assert pre == plain  # the same convolutions, arranged pre-activation


def test_warm_start_from_float_weights():
    float_net = create_model("resnet20", [16], layers="plain", base_width=4)
    randomize_bn(float_net)
    quant_net = create_model("resnet20", [16, 12], base_width=4, quant=W2A2)
    load_plain_weights(quant_net, float_net.materialize().state_dict())
    assert torch.equal(quant_net.net.layer2[0].conv1.weight, float_net.net.layer2[0].conv1.weight)
    assert torch.equal(quant_net.net.layer2[0].bn1.sets[1].running_var, float_net.net.layer2[0].bn1.running_var)


# --------------------------------------------------------------------------------------- training
def test_quantized_rsnet_2_2_step_trains_on_a_fixed_batch():
    torch.manual_seed(6)
    method = build_method("rsnet", [16, 12])
    net = create_model("resnet20", method=method, num_classes=4, base_width=8, quant=W2A2)
    params = list(net.parameters()) + list(method.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    y = torch.arange(16) % 4
    x = torch.randn(4, 3, 16, 16)[y] + 0.5 * torch.randn(16, 3, 16, 16)  # a noisy template per class
    losses = []
    for _ in range(12):  # 2-bit activations: a few steps on a plateau, then the loss falls
        opt.zero_grad()
        losses.append(float(method.training_step(net, MultiResBatch(x, y), lambda loss: loss.backward())["loss"]))
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses


# ------------------------------------------------------------------------------ checkpoints, export
def trained_quant_net(steps: int = 2):
    torch.manual_seed(7)
    method = build_method("rsnet", [16, 12])
    net = create_model("resnet20", method=method, num_classes=4, base_width=4,
                       quant={**W2A2, "act_basis_update": "highest"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    for _ in range(steps):
        opt.zero_grad()
        method.training_step(net, MultiResBatch(x, y), lambda loss: loss.backward())
        opt.step()
    return method, net.eval()


def test_checkpoint_round_trip_keeps_bases_and_outputs(tmp_path):
    method, net = trained_quant_net()
    conv = net.net.layer2[0].conv1
    assert not torch.equal(conv.act_quant.basis, initial_act_basis(2))  # training moved the bases
    path = tmp_path / "q.ckpt"
    torch.save(make_checkpoint(method, net, {"name": "rsnet", "kwargs": {}}), path)
    meta = load_checkpoint(path)["resnet_switch"]
    assert meta["net"]["quant"] == {**W2A2, "act_basis_update": "highest"}
    _, rebuilt, _ = rebuild_from_checkpoint(load_checkpoint(path))
    again = rebuilt.net.layer2[0].conv1
    assert torch.equal(again.act_quant.basis, conv.act_quant.basis)
    assert torch.equal(again.weight_quant.basis, conv.weight_quant.basis)
    assert again.act_quant.update == "highest"
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad(), net.switch(SubnetConfig(12)), rebuilt.switch(SubnetConfig(12)):
        assert torch.equal(net(x), rebuilt(x))
    with pytest.raises(CheckpointError, match="^ckpt_path: checkpoint was trained with quant="):
        check_compatible(meta, "rsnet", "resnet20", [16, 12], None)


@pytest.fixture(scope="module")
def quant_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("q") / "q.ckpt", quant=W2A2)


def _load_exported(fmt, path):
    """The exported file loaded back as a user would, independently of the exporter: ``x -> logits``."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path))
        return module
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    return load_quantized_state(torch.load(path, weights_only=True))  # the plain model from the file alone


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs("onnxscript")), "state_dict"])
def test_quantized_export_reproduces_the_switchable_network(quant_ckpt, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    result = export.main([f"ckpt={quant_ckpt}", "resolution=14", f"format={fmt}", f"out={out}", "bn_mode=interpolate"])
    assert result["out"] == str(out)
    # the switchable network rebuilt from the checkpoint (14: unseen, BN interpolated between 16 and 12)
    # against the file loaded back, on a batch size and inputs the exporter never used
    x = torch.randn(3, 3, 14, 14, generator=torch.Generator().manual_seed(7))
    _, net, _ = rebuild_from_checkpoint(load_checkpoint(quant_ckpt))
    with torch.no_grad(), net.switch(SubnetConfig(14), "interpolate"):
        expected = net.eval()(x)
    with torch.no_grad():
        got = _load_exported(fmt, out)(x)
    assert got.shape == expected.shape == (3, 10)
    assert expected.abs().max() > 0
    assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    if fmt == "state_dict":
        packed = torch.load(out, weights_only=True)
        assert packed["format"] == PACKED_FORMAT and "codes and bases" in result["checked_with"]
        entry = packed["weights"]["layer2.0.conv1.conv.weight"]
        assert entry["codes"].dtype == torch.uint8 and int(entry["codes"].max()) <= 3
        assert entry["basis"].shape == (8, 2) and "layer2.0.conv1.quant" in packed["activations"]
        assert not any(k.endswith("conv1.conv.weight") for k in packed["float"] if k.startswith("layer"))


def test_export_is_quantized_not_float(quant_ckpt):
    # the fake-quantized plain model differs from the same weights run in float
    _, net, _ = rebuild_from_checkpoint(load_checkpoint(quant_ckpt))
    plain = net.materialize(SubnetConfig(16))
    twin = create_model(**{k: v for k, v in net.spec.items() if k != "quant"}).eval()
    twin.load_state_dict(net.state_dict(), strict=False)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad(), net.switch(SubnetConfig(16)), twin.switch(SubnetConfig(16)):
        assert torch.allclose(plain(x), net(x), atol=1e-5)
        assert not torch.allclose(plain(x), twin(x), atol=1e-2)
    conv = plain.layer1[0].conv1.conv
    assert conv.weight.unique().numel() <= 4 * conv.out_channels  # at most 2^K levels per channel


def test_quantized_state_dict_refuses_fold_bn(quant_ckpt, tmp_path, capsys):
    from resnet_switch.cli.options import run_tool

    with pytest.raises(SystemExit) as exit_info:
        run_tool(export.main, [f"ckpt={quant_ckpt}", "resolution=16", "format=state_dict", "fold_bn=true",
                               f"out={tmp_path / 'x.pth'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: fold_bn: a quantized state_dict holds codes")


# ------------------------------------------------------------------------ the training command
def test_train_with_quant_lq_checkpoints_bases_and_resumes(tmp_path):
    from resnet_switch.evaluation.accuracy import evaluate_configs
    from resnet_switch.train import build_datamodule, train

    from .helpers import tiny_cfg

    overrides = ["method=rsnet", "quant=lq", "quant.act_basis_update=highest", "trainer.limit_train_batches=2",
                 "data.val_samples=16"]
    cfg = tiny_cfg(tmp_path, *overrides)
    metrics = train(cfg)
    ckpt_path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["resnet_switch"]["net"]["quant"] == {"weight_bits": 2, "act_bits": 2, "act_basis_update": "highest"}
    method, net, _ = rebuild_from_checkpoint(ckpt)
    assert not torch.equal(net.net.layer1[0].conv1.act_quant.basis, initial_act_basis(2))
    rows = evaluate_configs(net, build_datamodule(cfg, cfg.data.resolutions), method.eval_configs(), progress=False)
    assert {f"acc1@{r['resolution']}": r["top1"] for r in rows} == pytest.approx(metrics, abs=1e-6)
    # resume: the bases come back from the checkpoint and training goes on
    train(tiny_cfg(tmp_path, *overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt_path}"))
    assert load_checkpoint(ckpt_path)["global_step"] == 2 * ckpt["global_step"]
    with pytest.raises(CheckpointError, match="^ckpt_path: checkpoint was trained with quant="):
        train(tiny_cfg(tmp_path / "float", "method=rsnet", f"ckpt_path={ckpt_path}", "trainer.max_epochs=2"))


# ------------------------------------------------------------------------------------ the bench
def test_bench_train_step_times_the_quantized_step_against_the_float_one(monkeypatch):
    from resnet_switch.bench import step as bench_step

    opts = dict(bench_step.DEFAULTS, model="resnet20", resolutions=[16, 12], batch_size=2, num_classes=10,
                quant="lq", **{"quant.weight_bits": 2, "quant.act_bits": 2}, device="cpu")
    cpu = torch.device("cpu")
    images, targets = bench_step.make_data(opts, cpu)
    ours = bench_step.build_step("ours", opts, {}, images, targets, cpu)
    plain = bench_step.build_step("float", opts, {}, images, targets, cpu)
    ours()
    assert sum(p.numel() for p in ours.params) == sum(p.numel() for p in plain.params)  # same trainables
    assert bench_step.timed_contenders(opts) == ["ours", "baseline", "baseline_tuned", "float"]
    fake_ms = {"ours": 3.0, "float": 2.0, "baseline": 1.0}
    monkeypatch.setattr(bench_step, "run_child", lambda entry, job: {"ms": [fake_ms[job["role"]]]})
    result = bench_step.train_step_task(dict(opts, rounds=1), {})
    assert result["float_ms"] == 2.0 and result["quant_ratio"] == 1.5
    with pytest.raises(ValueError, match="^quant: method=san is not supported"):
        bench_step.check_options(dict(opts, method="san"), {})
