"""The torch ECA-Net model zoo: parameter counts, canonical keys, the official code as oracle,
official checkpoints (``module.`` prefix, zip and legacy serialization), kernel sizes read from the
checkpoint, and canonical round trips."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import require_backend

torch = require_backend("torch")
from common import OFFICIAL_PARAMS  # noqa: E402
from torch import nn  # noqa: E402

from eca_multi import archs  # noqa: E402
from eca_multi.peers.official import EcaLayer as OfficialEcaLayer  # noqa: E402
from eca_multi.port import read_source  # noqa: E402
from eca_multi.torch import io as IO  # noqa: E402
from eca_multi.torch import models as M  # noqa: E402
from eca_multi.weights import WeightMismatchError  # noqa: E402

PARAMS = OFFICIAL_PARAMS  # the issue's numbers (tests/common.py)
_CACHE: dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    """Each official model built once per test module (eval mode, seeded init)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = M.create_model(name).eval()
    return _CACHE[name]


def _logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


# ---------------------------------------------------------------------------------------------
# The authors' code (https://github.com/BangguWu/ECANet, models/eca_module.py, eca_resnet.py,
# eca_mobilenetv2.py; MIT), transcribed as the oracle: our plan-walked models must match it.


class _ECABasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, k_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.eca = OfficialEcaLayer(planes, k_size)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.eca(self.bn2(self.conv2(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class _ECABottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, k_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.eca = OfficialEcaLayer(planes * 4, k_size)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.eca(self.bn3(self.conv3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class _ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, k_size=(3, 3, 3, 3)):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], int(k_size[0]))
        self.layer2 = self._make_layer(block, 128, layers[1], int(k_size[1]), stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], int(k_size[2]), stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], int(k_size[3]), stride=2)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, k_size, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, k_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, k_size=k_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


def _conv_bn_relu(inp, oup, kernel_size=3, stride=1, groups=1):
    padding = (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio, k_size):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(inp, hidden_dim, kernel_size=1))
        layers.extend(
            [
                _conv_bn_relu(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            ]
        )
        layers.append(OfficialEcaLayer(oup, k_size))
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class _ECA_MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        input_channel, last_channel = 32, 1280
        setting = [
            [1, 16, 1, 1],
            [6, 24, 2, 2],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]
        features = [_conv_bn_relu(3, input_channel, stride=2)]
        for t, c, n, s in setting:
            for i in range(n):
                ksize = 1 if c <= 96 else 3  # the published "k13" (issue: k = 1 where C <= 96)
                features.append(_InvertedResidual(input_channel, c, s if i == 0 else 1, t, ksize))
                input_channel = c
        features.append(_conv_bn_relu(input_channel, last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(last_channel, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(-1).mean(-1))


def _official(name: str) -> nn.Module:
    if name == "eca_mobilenet_v2":
        return _ECA_MobileNetV2()
    arch = archs.get_arch(name)
    block = _ECABasicBlock if arch.block == "basic" else _ECABottleneck
    return _ResNet(block, arch.layers, k_size=arch.kernel_sizes)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_is_the_issues_number(name):
    model = _model(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == PARAMS[name], f"{name}: {n:,} parameters, expected {PARAMS[name]:,}"


@pytest.mark.parametrize("name", list(PARAMS))
def test_state_dict_keys_order_and_shapes_are_the_schema(name):
    sd, schema = _model(name).state_dict(), archs.schema(name)
    assert list(sd) == list(schema), f"{name}: first differing key: " + next(
        (f"{a} != {b}" for a, b in zip(sd, schema, strict=False) if a != b), "length"
    )
    bad = {
        k: (tuple(v.shape), schema[k][0]) for k, v in sd.items() if tuple(v.shape) != schema[k][0]
    }
    assert not bad, f"{name}: shapes differ from the schema: {bad}"


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2"])
def test_matches_the_official_code(name):
    """The authors' modules (transcribed above) load our state_dict strictly and agree exactly."""
    ours = M.randomize_batchnorm_(_model(name), seed=1, image_size=64)
    theirs = _official(name).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    a, b = _logits(ours, x), _logits(theirs, x)
    d = np.max(np.abs(a - b))
    assert d <= 1e-5, f"{name}: max abs logit difference to the official code {d:.2e} > 1e-5"


@pytest.mark.parametrize("name", ["ecaresnet26t", "ecaresnetlight"])
def test_plan_walk_equals_timm_for_timm_archs(name):
    """The shared archs plans (deep/tiered stems, avg-down, timm k rule) rebuild timm exactly."""
    timm = require_backend("timm")
    ref = M.randomize_batchnorm_(timm.create_model(name, pretrained=False), seed=3).eval()
    ours = M.ECAResNet(name).eval()
    assert list(ours.state_dict()) == list(ref.state_dict()) == list(archs.schema(name))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 225, 225, generator=torch.Generator().manual_seed(4))  # odd: ceil-mode
    d = np.max(np.abs(_logits(ours, x) - _logits(ref, x)))
    assert d <= 1e-5, f"{name} at 225x225: max abs difference to timm {d:.2e}"


def test_create_model_for_timm_names_is_timm():
    timm = require_backend("timm")
    model = M.create_model("ecaresnet26t", num_classes=10)
    assert type(model).__module__.startswith("timm")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: s for k, (s, _) in archs.schema("ecaresnet26t", 10).items()
    }
    custom = M.create_model("ecaresnet26t", kernel_sizes=(3, 3, 3, 3))
    assert M.model_kernel_sizes("ecaresnet26t", custom) == (3, 3, 3, 3)
    x = torch.randn(1, 3, 64, 64)
    assert custom.eval()(x).shape == (1, 1000) and timm.__name__ == "timm"


def test_create_model_without_timm_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="timm architecture.*pip install timm"):
        M.create_model("ecaresnet50d")
    with pytest.raises(KeyError, match="unknown architecture 'resnet50'"):
        M.create_model("resnet50")


def test_train_step_runs_and_reaches_every_eca():
    model = M.create_model("eca_resnet18", num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 3]))
    loss.backward()
    ecas = {k: p.grad for k, p in model.named_parameters() if ".eca." in k}
    assert len(ecas) == 8 and all(g is not None and torch.any(g != 0) for g in ecas.values())
    assert int(model.bn1.num_batches_tracked) == 1


def test_mobilenet_train_step_and_dropout():
    model = M.create_model("eca_mobilenet_v2", num_classes=3).train()
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert model.features[1].conv[3].conv.weight.grad is not None
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.25


def test_kernel_sizes_follow_the_published_tables():
    assert M.model_kernel_sizes("eca_resnet50", _model("eca_resnet50")) == (3, 5, 5, 7)
    assert M.model_kernel_sizes("eca_resnet18", _model("eca_resnet18")) == (3, 5, 7, 7)
    ks = M.model_kernel_sizes("eca_mobilenet_v2", _model("eca_mobilenet_v2"))
    arch = archs.get_arch("eca_mobilenet_v2")
    assert ks == {b.index: (1 if b.oup <= 96 else 3) for b in archs.mobilenet_v2_blocks(arch)}
    assert sorted(set(ks.values())) == [1, 3]


# ---------------------------------------------------------------------------------------------
# canonical weights and official checkpoints


def test_canonical_round_trip_is_exact():
    src = _model("eca_resnet18")
    state = IO.export_canonical_model(src)
    assert state["bn1.num_batches_tracked"].dtype == np.int64
    assert state["bn1.num_batches_tracked"].shape == ()
    assert state["layer4.1.eca.conv.weight"].shape == (1, 1, 7)
    dst = M.create_model("eca_resnet18")
    IO.load_canonical_model(dst, state, name="eca_resnet18")
    for k, v in IO.export_canonical_model(dst).items():
        assert np.array_equal(v, state[k]) and v.dtype == state[k].dtype, k


def test_load_canonical_lists_every_problem():
    state = IO.export_canonical_model(_model("eca_resnet18"))
    del state["fc.bias"], state["layer1.0.bn1.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["layer2.1.eca.conv.weight"] = np.zeros((1, 1, 3), np.float32)  # published k is 5
    with pytest.raises(WeightMismatchError) as e:
        IO.load_canonical_model(M.create_model("eca_resnet18"), state, name="eca_resnet18")
    msg = str(e.value)
    for part in (
        "fc.bias",
        "layer1.0.bn1.running_var",
        "extra.weight",
        "layer2.1.eca.conv.weight: expected (1, 1, 5), got (1, 1, 3)",
    ):
        assert part in msg, f"{part!r} not in:\n{msg}"


def _official_checkpoint(model: nn.Module, arch: str, path, legacy: bool = False) -> None:
    """Write ``model`` the way the authors' train script does (DataParallel keys, metadata)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()  # an optimizer state with momentum buffers, as in a real checkpoint
    opt.zero_grad()
    ckpt = {
        "epoch": 90,
        "arch": arch,
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "best_prec1": torch.tensor(77.42),
        "optimizer": opt.state_dict(),
    }
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_official_checkpoint_loads(tmp_path, legacy):
    model = M.randomize_batchnorm_(M.create_model("eca_resnet18"), seed=5, image_size=64).eval()
    path = tmp_path / "eca_resnet18_k3577.pth.tar"
    _official_checkpoint(model, "eca_resnet18", path, legacy)
    model.eval()
    # as the issue says: load_state_dict once the 'module.' prefix is dropped
    raw = torch.load(path, map_location="cpu", weights_only=True)
    plain = M.create_model("eca_resnet18")
    plain.load_state_dict({k.removeprefix("module."): v for k, v in raw["state_dict"].items()})
    # and through the source reader (format by content, metadata kept)
    state, info = read_source(path, "eca_resnet18")
    assert info["format"] == "official" and info["prefix_stripped"] == "module."
    assert info["epoch"] == 90 and info["arch"] == "eca_resnet18"
    assert abs(info["best_prec1"] - 77.42) < 1e-4 and info["kernel_sizes"] == (3, 5, 7, 7)
    loaded = M.create_model("eca_resnet18")
    IO.load_canonical_model(loaded, state, name="eca_resnet18")
    x = torch.randn(1, 3, 96, 96)
    ref = _logits(model, x)
    assert np.array_equal(_logits(loaded, x), ref) and np.array_equal(_logits(plain, x), ref)


def test_kernel_sizes_are_read_from_the_checkpoint(tmp_path):
    """The authors' eca_resnet18() ignores its k_size (k = 3 everywhere): read k, don't assume."""
    model = M.create_model("eca_resnet18", kernel_sizes=(3, 3, 3, 3)).eval()
    path = tmp_path / "r18.pth.tar"
    _official_checkpoint(model, "eca_resnet18", path)
    with pytest.raises(
        ValueError,
        match=r"kernel sizes in the weights are \(3, 3, 3, 3\) but "
        r"eca_resnet18 is configured with \(3, 5, 7, 7\).*'checkpoint'",
    ):
        read_source(path, "eca_resnet18")
    state, info = read_source(path, "eca_resnet18", kernel_sizes="checkpoint")
    assert info["kernel_sizes"] == (3, 3, 3, 3)
    rebuilt = M.create_model("eca_resnet18", kernel_sizes=info["kernel_sizes"])
    IO.load_canonical_model(rebuilt, state, name="eca_resnet18")
    with pytest.raises(
        WeightMismatchError,
        match=r"layer2\.0\.eca\.conv\.weight: expected "
        r"\(1, 1, 5\), got \(1, 1, 3\)",
    ):
        IO.load_canonical_model(M.create_model("eca_resnet18"), state, name="eca_resnet18")


def test_mobilenet_kernel_sizes_from_checkpoint(tmp_path):
    ks = dict.fromkeys(range(1, 18), 3)
    model = M.create_model("eca_mobilenet_v2", kernel_sizes=ks, num_classes=7)
    path = tmp_path / "mnv2.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="kernel_sizes='checkpoint'"):
        read_source(path, "eca_mobilenet_v2")
    state, info = read_source(path, "eca_mobilenet_v2", kernel_sizes="checkpoint")
    assert info["format"] == "torch-state-dict" and info["kernel_sizes"] == ks
    assert info["num_classes"] == 7


def test_randomize_batchnorm_is_non_trivial_and_well_posed():
    model = M.randomize_batchnorm_(M.create_model("eca_resnet50"), seed=0, image_size=64)
    assert not model.training
    bn, last = model.layer3[1].bn2, model.layer3[1].bn3  # bn3 ends the residual branch
    assert bn.running_mean.abs().max() > 1e-3 and (bn.running_var - 1).abs().max() > 1e-2
    assert int(bn.num_batches_tracked) > 0
    assert 0.2 <= float(last.weight.detach().min()) and float(last.weight.detach().max()) <= 0.6
    assert 0.5 <= float(bn.weight.detach().min()) and float(bn.weight.detach().max()) <= 1.5
    out = _logits(model, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert np.isfinite(out).all() and np.abs(out).max() < 100, np.abs(out).max()


def _set_pools_through(model: nn.Module, on: bool) -> list[bool]:
    flags = []
    for block in model.modules():
        if isinstance(block, M.ECABlock):
            flags.append(block.pools_through)
            block.pools_through = on and len(block.pairs) == 3  # bottlenecks only
    return flags


@pytest.mark.parametrize("attention", ["eca", "se"])
def test_bottleneck_pools_conv3_input_at_inference(attention):
    """Eval: bottlenecks where archs.pool_through_pays pool conv3's input through conv3 and BN;
    logits equal the block output's own mean up to float32 rounding. Train: unused (bit-equal)."""
    torch.manual_seed(0)
    model = M.randomize_batchnorm_(
        M.create_model("eca_resnet50", attention=attention), seed=2, image_size=64
    ).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    flags = _set_pools_through(model, True)
    assert len(flags) == 16 and all(flags), flags
    with torch.no_grad():
        fast = model(x)
        _set_pools_through(model, False)
        slow = model(x)
    err, scale = float((fast - slow).abs().max()), float(slow.abs().max())
    assert 0 < err <= 1e-5 * scale, f"{attention}: max_abs={err:.2e} (|logit| {scale:.2f})"
    model.train()
    with torch.no_grad():
        off = model(x)
        _set_pools_through(model, True)
        assert torch.equal(model(x), off), f"{attention}: train mode changed"


def test_basic_blocks_do_not_pool_through():
    flags = [
        b.pools_through
        for b in M.create_model("eca_resnet18").modules()
        if isinstance(b, M.ECABlock)
    ]
    assert flags and not any(flags), flags
