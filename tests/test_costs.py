"""MAdds / parameter counts of materialised configurations (resnet_switch.evaluation.costs, resnet_switch.costs)."""

import pytest
import torchvision

from resnet_switch.costs import format_csv, main
from resnet_switch.evaluation.costs import cost_table, count_costs, human
from resnet_switch.models import build_switchable
from resnet_switch.switch import SubnetConfig

RESOLUTIONS = [224, 192, 160, 128, 96]
# RS-Net paper Table 2 (REFERENCE.md), MAdds at 224/192/160/128/96
PAPER_MADDS = {
    "resnet18": [1.82e9, 1.34e9, 931e6, 596e6, 335e6],
    "resnet50": [4.14e9, 3.04e9, 2.11e9, 1.35e9, 760e6],
    "mobilenetv2": [301e6, 221e6, 154e6, 99e6, 56e6],
}


def slimmable_registered() -> bool:
    import resnet_switch.layers  # noqa: F401
    from resnet_switch.layers.factory import LAYER_FACTORIES

    return "slimmable" in LAYER_FACTORIES


def assert_close_to_paper(model, rel):
    rows = cost_table(model, RESOLUTIONS)
    assert [row["resolution"] for row in rows] == RESOLUTIONS
    for row, paper in zip(rows, PAPER_MADDS[model]):
        assert abs(row["madds"] - paper) <= rel * paper, (model, row, paper)
    return rows


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv2"])
def test_madds_match_paper_table_within_1_percent(model):
    rows = assert_close_to_paper(model, 0.01)
    assert len({row["params"] for row in rows}) == 1  # parameters do not depend on resolution


@pytest.mark.slow
def test_resnet50_madds_equal_torchvision_and_near_paper():
    # FlopCounterMode on torchvision's resnet50 gives 4.089G at 224, 1.0-1.24% below the paper's
    # 4.14G (the paper counted with another tool); we check the exact torchvision count and 1.3%.
    rows = assert_close_to_paper("resnet50", 0.013)
    tv = torchvision.models.resnet50()
    assert count_costs(tv, SubnetConfig(224)) == (rows[0]["madds"], rows[0]["params"])


def test_count_costs_equals_torchvision_count_on_plain_module():
    net = build_switchable("resnet18", [96], layers="plain")
    madds, params = count_costs(net, SubnetConfig(96))
    assert (madds, params) == count_costs(torchvision.models.resnet18(), SubnetConfig(96))
    assert params == 11_689_512
    # a network built for RS-Net (private BN) materialises to the same plain cost
    assert count_costs(build_switchable("resnet18", [96, 64]), SubnetConfig(96)) == (madds, params)


def test_count_costs_uses_image_channels_and_restores_mode():
    net = build_switchable("resnet20", [32], layers="plain", num_classes=10, in_channels=1)
    madds, _ = count_costs(net, SubnetConfig(32))
    madds3, _ = count_costs(build_switchable("resnet20", [32], layers="plain", num_classes=10), SubnetConfig(32))
    assert madds3 - madds == 2 * 16 * 9 * 32 * 32  # stem conv: two fewer input channels
    plain = torchvision.models.resnet18().train()
    count_costs(plain, SubnetConfig(32))
    assert plain.training


@pytest.mark.skipif(not slimmable_registered(), reason="'slimmable' layer factory not registered yet")
def test_width_costs_match_mutualnet_reference():
    # REFERENCE.md: MobileNetV2 0.7@160 89.3M; MobileNetV1 0.25@128 13.6M (MACs)
    v2 = {r["width"]: r for r in cost_table("mobilenetv2", [160], [1.0, 0.7])}
    assert abs(v2[0.7]["madds"] - 89.3e6) <= 0.01 * 89.3e6
    assert v2[0.7]["params"] < v2[1.0]["params"]
    v1 = {r["width"]: r["madds"] for r in cost_table("mobilenetv1", [128], [1.0, 0.25])}
    assert abs(v1[0.25] - 13.6e6) <= 0.01 * 13.6e6


def test_csv_header_and_one_row_per_configuration(capsys):
    main(["model=resnet20", "resolutions=[32,24,16]", "num_classes=10", "format=csv"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "resolution,width,madds,params"
    assert len(lines) == 1 + 3
    cells = [line.split(",") for line in lines[1:]]
    assert [int(c[0]) for c in cells] == [32, 24, 16]
    madds = [int(c[2]) for c in cells]
    assert madds[0] > madds[1] > madds[2] > 0
    assert format_csv([]) == "resolution,width,madds,params"


def test_markdown_is_default_with_human_units(capsys):
    main(["model=resnet20", "resolutions=[32]", "num_classes=10"])
    out = capsys.readouterr().out
    assert out.startswith("| resolution | width | MAdds | params |")
    assert "| 32 | 1.0 | 40.8M | 272k |" in out


def test_human_units():
    assert [human(v) for v in (1_814_073_344, 931_400_000, 56_289_152, 999_700_000, 4500, 12)] == [
        "1.81G", "931M", "56.3M", "1.00G", "4.50k", "12"]

