"""The NViR network matches the paper's checkpoint layout key for key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from nvir_agent.model.network import build_nvir, expected_shapes, parameter_count


def _paper_layout() -> dict[str, tuple[int, ...]]:
    """The documented layout, written out from DESIGN.md rather than derived from our module."""
    layout: dict[str, tuple[int, ...]] = {"encoder.0.conv1.weight": (64, 1, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (c,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    bn("encoder.0.bn1", 64)
    c_in = 64
    for layer, c in zip((1, 2, 3, 4), (64, 128, 256, 512), strict=True):
        for block in (0, 1):
            p = f"encoder.0.layer{layer}.{block}"
            first_in = c_in if block == 0 else c
            layout[f"{p}.conv1.weight"] = (c, first_in, 3, 3)
            bn(f"{p}.bn1", c)
            layout[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if block == 0 and layer > 1:
                layout[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                bn(f"{p}.downsample.1", c)
        c_in = c
    for i, (out, inp) in zip((0, 3, 6, 9), ((32, 512), (32, 32), (32, 32), (32, 32)), strict=True):
        layout[f"regression_head.0.{i}.weight"] = (out, inp)
        layout[f"regression_head.0.{i}.bias"] = (out,)
    layout["regression_head.1.weight"] = (1, 32)
    layout["regression_head.1.bias"] = (1,)
    return layout


def test_state_dict_keys_and_shapes_match_the_paper_checkpoint_layout():
    assert expected_shapes() == _paper_layout()


def test_network_has_no_fc_and_maps_an_image_batch_to_one_viability_each():
    net = build_nvir().eval()
    assert not any(k.endswith("fc.weight") for k in net.state_dict())
    with torch.no_grad():
        out = net(torch.zeros(3, 1, 64, 64))
    assert out.shape == (3, 1)
    assert parameter_count(net) == 11_189_857


def test_head_is_built_like_torchvision_mlp_with_dropout_0_3():
    net = build_nvir()
    mlp = net.regression_head[0]
    reference = torchvision.ops.MLP(512, [32, 32, 32, 32], dropout=0.3)
    assert [type(m) for m in mlp] == [type(m) for m in reference]
    assert mlp.state_dict().keys() == reference.state_dict().keys()
    drops = [m.p for m in mlp if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.3] * 4


def test_network_scores_like_torchvision_resnet18_and_mlp_with_the_same_weights():
    resnet = torchvision.models.resnet18(weights=None)
    resnet.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    resnet.fc = torch.nn.Identity()
    reference = torch.nn.Sequential(
        resnet,
        torch.nn.Flatten(),
        torchvision.ops.MLP(512, [32, 32, 32, 32], dropout=0.3),
        torch.nn.Linear(32, 1),
    ).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for name, buf in reference.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    net = build_nvir().eval()
    ours = net.state_dict()
    theirs = list(reference.state_dict().values())
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs]
    net.load_state_dict(dict(zip(ours.keys(), theirs, strict=True)))
    x = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.allclose(net(x), reference(x), atol=1e-6)


def test_scoring_network_does_not_import_torchvision():
    code = "import sys, nvir_agent.model.network; print('torchvision' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_imagenet_init_sums_the_rgb_kernels_into_the_single_channel_conv1():
    rgb = torchvision.models.resnet18(weights=None)
    torch.manual_seed(0)
    state = {
        k: torch.randn_like(v) if v.is_floating_point() else v for k, v in rgb.state_dict().items()
    }
    net = build_nvir(state)
    got = net.state_dict()
    assert torch.equal(got["encoder.0.conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(got["encoder.0.layer3.1.bn2.running_var"], state["layer3.1.bn2.running_var"])


def test_imagenet_init_rejects_a_state_dict_that_is_not_resnet18():
    with pytest.raises(ValueError, match="conv1.weight"):
        build_nvir({"conv1.weight": torch.zeros(8, 3, 3, 3)})
