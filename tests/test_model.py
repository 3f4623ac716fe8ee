"""Segmenter network shapes, the folded eval path, shipped weights bytes and the load_segmenter preflight."""
import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from digitiser import checkpoint as ckpt
from cli import main
from digitiser.model import Segmenter, SegmenterConfig, grow
from digitiser.predictor import DEFAULT_WEIGHTS

SMALL = SegmenterConfig(base=4, levels=2, max_width=8)
ROOT = Path(__file__).resolve().parents[1]


def _model(config=SMALL, seed=0) -> Segmenter:
    torch.manual_seed(seed)
    return Segmenter(config)


def _trained_looking(model: Segmenter) -> Segmenter:
    """Non-trivial batch-norm statistics, so the folded eval path is really exercised."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 1, 32, 32) * 3 + 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- network

def test_output_is_logits_for_three_classes_at_input_size():
    out = _model()(torch.rand(2, 1, 32, 48))
    assert out.shape == (2, 3, 32, 48) and out.dtype == torch.float32


def test_default_config_handles_a_padded_1000x300_scan():
    model = Segmenter(SegmenterConfig()).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 1008, 304))
    assert out.shape == (1, 3, 1008, 304) and out.is_contiguous()


def test_input_not_a_multiple_of_2_pow_levels_is_refused():
    with pytest.raises(AssertionError, match="multiple of 4"):
        _model()(torch.rand(1, 1, 30, 32))


def test_widths_are_thin_at_full_resolution_and_capped():
    assert SegmenterConfig(base=8, levels=4, max_width=64).widths() == [8, 16, 32, 64, 64]


def test_receptive_field_spans_dash_periods():
    """A pixel's logits must see at least ~60 px up and down: dashed vs solid is a matter of context."""
    model = _trained_looking(_model(SegmenterConfig()))
    x = torch.rand(1, 1, 256, 64, requires_grad=True)
    model(x)[0, :, 128, 32].sum().backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert rows.min() <= 128 - 60 and rows.max() >= 128 + 60


@pytest.mark.parametrize("config", [SMALL, dataclasses.replace(SMALL, context=2)])  # dilated convs fold too
def test_folded_eval_path_matches_plain_batch_norm(config):
    model = _trained_looking(_model(config))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        folded = model(x)
        for block in [m for m in model.modules() if hasattr(m, "bn")]:
            block.forward = lambda t, b=block: torch.relu(b.bn(b.conv(t)))
        plain = model(x)
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- shipped weights

def test_same_tensors_give_same_bytes_at_any_path(tmp_path):
    model = _trained_looking(_model())
    v1 = ckpt.save_weights(model, SMALL, tmp_path / "a.pt")
    v2 = ckpt.save_weights(_trained_looking(_model()), SMALL, tmp_path / "sub" / "b.pt")
    assert v1 == v2 and (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()


def test_model_version_is_sha256_of_the_weights_file(tmp_path):
    version = ckpt.save_weights(_model(), SMALL, tmp_path / "w.pt")
    sidecar = json.loads((tmp_path / "w.pt.json").read_text())
    assert version == ckpt.sha256_file(tmp_path / "w.pt") == sidecar["sha256"]
    assert sidecar["n_classes"] == 3 and SegmenterConfig(**sidecar["config"]) == SMALL


def test_load_segmenter_round_trips_weights_and_outputs(tmp_path):
    model = _trained_looking(_model())
    version = ckpt.save_weights(model, SMALL, tmp_path / "w.pt")
    loaded, loaded_version = ckpt.load_segmenter(tmp_path / "w.pt")
    x = torch.rand(1, 1, 16, 16)
    assert loaded_version == version and not loaded.training
    assert torch.equal(loaded(x), model(x))


def test_preflight_refuses_sidecar_sha_mismatch(tmp_path):
    ckpt.save_weights(_model(), SMALL, tmp_path / "w.pt")
    ckpt.save_weights(_model(seed=1), SMALL, tmp_path / "other.pt")
    (tmp_path / "w.pt.json").write_bytes((tmp_path / "other.pt.json").read_bytes())
    with pytest.raises(ckpt.CheckpointError, match="sha256 is .* but the sidecar says"):
        ckpt.load_segmenter(tmp_path / "w.pt")


def test_preflight_refuses_a_flipped_byte(tmp_path):
    ckpt.save_weights(_model(), SMALL, tmp_path / "w.pt")
    data = bytearray((tmp_path / "w.pt").read_bytes())
    data[-5] ^= 0x01
    (tmp_path / "w.pt").write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="w.pt"):
        ckpt.load_segmenter(tmp_path / "w.pt")


def test_preflight_refuses_a_class_count_other_than_3(tmp_path):
    cfg = SegmenterConfig(base=4, levels=2, max_width=8, n_classes=4)
    ckpt.save_weights(_model(cfg), cfg, tmp_path / "w.pt")
    with pytest.raises(ckpt.CheckpointError, match="4 classes"):
        ckpt.load_segmenter(tmp_path / "w.pt")


def test_preflight_refuses_weights_that_do_not_fit_the_config(tmp_path):
    ckpt.save_weights(_model(), SegmenterConfig(base=8, levels=2, max_width=8), tmp_path / "w.pt")
    with pytest.raises(ckpt.CheckpointError, match="state dict does not match"):
        ckpt.load_segmenter(tmp_path / "w.pt")


def test_preflight_refuses_non_finite_weights(tmp_path):
    model = _model()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    ckpt.save_weights(model, SMALL, tmp_path / "w.pt")
    with pytest.raises(ckpt.CheckpointError, match="finite=False"):
        ckpt.load_segmenter(tmp_path / "w.pt")


def test_preflight_refuses_a_missing_sidecar(tmp_path):
    ckpt.save_weights(_model(), SMALL, tmp_path / "w.pt")
    (tmp_path / "w.pt.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="sidecar w.pt.json not found"):
        ckpt.load_segmenter(tmp_path / "w.pt")


def test_averaging_a_model_with_itself_gives_its_own_bytes(tmp_path):
    version = ckpt.save_weights(_trained_looking(_model()), SMALL, tmp_path / "a.pt")
    assert ckpt.average_weights([tmp_path / "a.pt", tmp_path / "a.pt"], tmp_path / "soup.pt") == version


def test_averaged_weights_are_the_element_wise_mean(tmp_path):
    a, b = _trained_looking(_model(seed=0)), _trained_looking(_model(seed=1))
    ckpt.save_weights(a, SMALL, tmp_path / "a.pt")
    ckpt.save_weights(b, SMALL, tmp_path / "b.pt")
    version = ckpt.average_weights([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "soup.pt")
    soup, loaded_version = ckpt.load_segmenter(tmp_path / "soup.pt")  # the output passes the preflight
    w = "stem.0.conv.weight"
    expected = ((a.state_dict()[w].double() + b.state_dict()[w].double()) / 2).float()
    assert loaded_version == version and torch.equal(soup.state_dict()[w], expected)


def test_averaging_refuses_different_networks(tmp_path):
    ckpt.save_weights(_model(), SMALL, tmp_path / "a.pt")
    other = SegmenterConfig(base=4, levels=3, max_width=8)
    ckpt.save_weights(_model(other), other, tmp_path / "b.pt")
    with pytest.raises(ckpt.CheckpointError, match="different model configs"):
        ckpt.average_weights([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "soup.pt")
    assert not (tmp_path / "soup.pt").exists()


# ----------------------------------------------------------------------------- growing a network

@pytest.mark.parametrize("bigger", [SegmenterConfig(base=4, levels=3, max_width=16),   # deeper and wider
                                    SegmenterConfig(base=4, levels=2, max_width=16),   # wider only
                                    SegmenterConfig(base=4, levels=4, max_width=8),    # deeper only
                                    SegmenterConfig(base=4, levels=2, max_width=8, context=3)])  # line context
def test_a_grown_network_computes_the_same_function(bigger):
    small = _trained_looking(_model())
    grown = grow(small, bigger, seed=1)
    assert grown.config == bigger and grown.num_params() > small.num_params()
    x = torch.rand(2, 1, 64, 48) * 3
    with torch.no_grad():
        assert torch.equal(grown.eval()(x), small(x))
        assert torch.equal(grown.train()(x), small.train()(x))  # batch statistics too


def test_the_new_capacity_is_trainable():
    """Old channels ignore the new ones only at the start: the weights that read them get gradients at the
    first step, and after that every parameter does (nothing is left dead behind a zero)."""
    grown = grow(_trained_looking(_model()), SegmenterConfig(base=4, levels=3, max_width=16)).train()
    opt = torch.optim.SGD(grown.parameters(), lr=0.1)
    x = torch.rand(2, 1, 64, 48)
    for step in range(3):
        opt.zero_grad()
        grown(x).square().mean().backward()
        if step == 0:
            assert grown.ups[0].proj.weight.grad.abs().sum() > 0  # the gate onto the new level opens
        opt.step()
    dead = [n for n, p in grown.named_parameters() if not p.grad.abs().sum() > 0]
    assert not dead


def test_line_context_widens_what_a_full_resolution_pixel_sees():
    """The added layers are what they claim: a full-resolution feature after them reads +-16 px (the stem's
    +-2, then dilations 2, 4, 8), the stem alone +-2; and once the 1x1 has left zero every context weight is trained."""
    model = _model(dataclasses.replace(SMALL, context=3)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(2, 1, 128, 32)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert all(p.grad.abs().sum() > 0 for p in model.context.parameters())
    for layer, reach in ((model.stem, 2), (torch.nn.Sequential(model.stem, model.context), 16)):
        x = torch.rand(1, 1, 128, 32, requires_grad=True)
        layer.eval()(x)[0, :, 64, 16].sum().backward()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
        assert (rows.min().item(), rows.max().item()) == (64 - reach, 64 + reach)


def test_context_share_reads_zero_for_a_shut_gate_and_more_once_it_opens():
    """tools/context_share.py, which the model card's stages 30-36 quote: a network grown with context (the 1x1
    at zero) adds nothing to its stem's features; with the 1x1 open it adds a measurable share."""
    spec = importlib.util.spec_from_file_location("context_share", ROOT / "tools" / "context_share.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    grown = grow(_trained_looking(_model()), dataclasses.replace(SMALL, context=2)).eval()
    image = np.full((64, 32), 255, np.uint8)
    image[:, 10:12] = 0  # one black line on white paper
    assert tool.context_share(grown, image) == 0.0
    with torch.no_grad():
        grown.context.out.weight.fill_(1.0)
    assert tool.context_share(grown, image) > 0.01


def test_growing_is_seeded():
    small = _trained_looking(_model())
    bigger = SegmenterConfig(base=4, levels=3, max_width=16)
    a, b, c = (ckpt.weights_bytes(grow(small, bigger, seed=s), bigger) for s in (0, 0, 1))
    assert a == b != c


def test_cli_grow_writes_weights_that_pass_the_preflight(tmp_path, capsys):
    ckpt.save_weights(_trained_looking(_model()), SMALL, tmp_path / "small.pt")
    args = [str(tmp_path / "small.pt"), "--levels", "3", "--max-width", "16", "--out", str(tmp_path / "big.pt")]
    assert main(["grow", *args]) == 0
    model, version = ckpt.load_segmenter(tmp_path / "big.pt")
    assert model.config == SegmenterConfig(base=4, levels=3, max_width=16) and version in capsys.readouterr().out
    assert main(["grow", *args[:2], "1", *args[3:]]) == 2  # fewer levels: refused with the reason
    assert "cannot grow" in capsys.readouterr().err
    assert main(["grow", args[0], "--colour", "--out", str(tmp_path / "colour.pt")]) == 0   # levels, width kept
    assert ckpt.load_segmenter(tmp_path / "colour.pt")[0].config == dataclasses.replace(SMALL, in_channels=3)
    assert main(["grow", args[0], "--context", "3", "--out", str(tmp_path / "context.pt")]) == 0
    assert ckpt.load_segmenter(tmp_path / "context.pt")[0].config == dataclasses.replace(SMALL, context=3)


@pytest.fixture
def one_thread():
    """One intra-op thread, as the Digitiser reads (it parallelises over tiles instead). With two on this 2-core
    CPU (torch 2.13, channels_last) the mirror test's comparison failed in 4 of 28 runs of this file, the two
    readings apart by up to 1e-3 (never in 200 repeats in one plain process); with one, in none of 24."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mirror_average_reads_the_mean_of_both_views_and_is_mirror_symmetric(one_thread):
    plain = _trained_looking(_model())
    averaging = Segmenter(dataclasses.replace(SMALL, mirror_average=True)).eval()
    averaging.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        p = torch.softmax(averaging(x), dim=1)
        one, mirrored = torch.softmax(plain(x), dim=1), torch.softmax(plain(x.flip(-1)), dim=1).flip(-1)
        assert torch.allclose(p, (one + mirrored) / 2, atol=1e-6)
        assert not torch.allclose(p, one, atol=1e-3)          # the mirror view really counts
        # a mirrored track is read as the mirror of the track's reading
        assert torch.allclose(torch.softmax(averaging(x.flip(-1)), dim=1), p.flip(-1), atol=1e-6)
    averaging.train()   # training reads one view: the loss sees the plain logits
    assert torch.equal(averaging(x), plain.train()(x))


def test_mirror_average_is_part_of_the_weights_and_their_version(tmp_path):
    ckpt.save_weights(_trained_looking(_model()), SMALL, tmp_path / "plain.pt")
    assert main(["grow", str(tmp_path / "plain.pt"), "--mirror-average", "on", "--out", str(tmp_path / "m.pt")]) == 0
    (plain, v_plain), (mirror, v_mirror) = (ckpt.load_segmenter(tmp_path / n) for n in ("plain.pt", "m.pt"))
    assert mirror.config == dataclasses.replace(SMALL, mirror_average=True) and v_mirror != v_plain
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), mirror.state_dict().values()))
    assert main(["grow", str(tmp_path / "m.pt"), "--mirror-average", "off", "--out", str(tmp_path / "back.pt")]) == 0
    assert ckpt.load_segmenter(tmp_path / "back.pt")[1] == v_plain   # same tensors, same config: same bytes


def test_bfloat16_reads_as_float32_does_within_a_few_hundredths(one_thread):
    plain = _trained_looking(_model())
    fast = Segmenter(dataclasses.replace(SMALL, precision="bfloat16")).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        p, p_fast = torch.softmax(plain(x), dim=1), torch.softmax(fast(x), dim=1)
    assert p_fast.dtype == torch.float32 and torch.allclose(p_fast.sum(1), torch.ones(1), atol=1e-5)
    assert not torch.equal(p, p_fast) and (p - p_fast).abs().max() < 0.05   # really bfloat16, and close
    assert torch.equal(fast.train()(x), plain.train()(x))   # training is float32 whatever the config says
    with pytest.raises(ValueError, match="precision"):
        SegmenterConfig(precision="float16")


def test_bfloat16_on_float32_kernels_is_the_same_arithmetic_as_bfloat16_kernels(one_thread):
    """Where a device only emulates bfloat16 kernels the predictor runs bfloat16 on float32 ones (`conv2d`): the
    same rounding at every conv and sum, so it reads as autocast does to its last bits (the order of a conv's sums
    differs, as between two CPUs) and not as float32 does. Every conv site is covered: the line context, the
    up-steps' projections, the head, both views."""
    config = dataclasses.replace(SMALL, context=2, mirror_average=True)
    plain = _trained_looking(_model(config))
    fast = Segmenter(dataclasses.replace(config, precision="bfloat16")).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 64, 48)
    with torch.no_grad():
        p, p_kernels = torch.softmax(plain(x), dim=1), torch.softmax(fast(x), dim=1)
        fast.bfloat16_kernels = False
        p_f32_kernels = torch.softmax(fast(x), dim=1)
    assert p_f32_kernels.dtype == torch.float32
    off_by = (p_f32_kernels - p_kernels).abs().max()
    assert off_by < (p - p_kernels).abs().max() / 10 and off_by < 2e-3
    assert (p_f32_kernels == p_kernels).float().mean() > 0.5   # most values to the bit
    assert torch.equal(fast.train()(x), plain.train()(x))   # training is float32 whatever the kernels


def test_precision_is_part_of_the_weights_and_their_version(tmp_path):
    ckpt.save_weights(_trained_looking(_model()), SMALL, tmp_path / "plain.pt")
    assert main(["grow", str(tmp_path / "plain.pt"), "--precision", "bfloat16", "--out", str(tmp_path / "b.pt")]) == 0
    (plain, v_plain), (fast, v_fast) = (ckpt.load_segmenter(tmp_path / n) for n in ("plain.pt", "b.pt"))
    assert fast.config == dataclasses.replace(SMALL, precision="bfloat16") and v_fast != v_plain
    assert main(["grow", str(tmp_path / "b.pt"), "--precision", "float32", "--out", str(tmp_path / "back.pt")]) == 0
    assert ckpt.load_segmenter(tmp_path / "back.pt")[1] == v_plain   # same tensors, same config: same bytes


def test_the_shipped_weights_are_stage_16_reading_both_views_in_bfloat16():
    """The shipped file is stage 16's tensors (model version efb1e54d8acb, model card) with mirror averaging on
    and bfloat16 convs: turning both off gives stage 16's bytes back. (Stage 6's, which the recipes start from,
    are the file at git 61a6d85 with mirror averaging off: 55430149d481.)"""
    shipped, _ = ckpt.load_segmenter(DEFAULT_WEIGHTS)
    assert shipped.config.mirror_average and shipped.config.precision == "bfloat16"
    plain = dataclasses.replace(shipped.config, mirror_average=False, precision="float32")
    assert hashlib.sha256(ckpt.weights_bytes(shipped, plain)).hexdigest().startswith("efb1e54d8acb")


def test_a_grey_network_grown_to_colour_reads_colour_as_it_read_grey():
    """B, G, R planes in cv2's grey shares: on a grey image (three equal planes) the same function, on a colour
    one the function of its grey; so colour is fine-tuned in from where the grey network stood."""
    small = _trained_looking(_model())
    colour = grow(small, SegmenterConfig(base=4, levels=3, max_width=16, in_channels=3), seed=1).eval()
    grey = torch.rand(2, 1, 64, 48)
    bgr = torch.rand(2, 3, 64, 48)
    luminance = (bgr * torch.tensor([0.114, 0.587, 0.299])[:, None, None]).sum(1, keepdim=True)
    with torch.no_grad():
        assert torch.allclose(colour(grey.expand(-1, 3, -1, -1)), small(grey), atol=1e-5)
        assert torch.allclose(colour(bgr), small(luminance), atol=1e-5)
    with pytest.raises(ValueError, match="cannot grow"):
        grow(colour, SMALL)   # colour back to grey


@pytest.mark.parametrize("other", [SegmenterConfig(base=4, levels=1, max_width=8),    # shallower
                                   SegmenterConfig(base=8, levels=2, max_width=8),    # other base
                                   SegmenterConfig(base=4, levels=2, max_width=4),    # narrower
                                   SegmenterConfig(base=4, levels=2, max_width=8, context=1)])  # fewer context
def test_growing_refuses_to_shrink_or_change_the_base(other):
    with pytest.raises(ValueError, match="cannot grow"):
        grow(_model(dataclasses.replace(SMALL, context=other.context + 1 if other.context else 0)), other)


# ----------------------------------------------------------------------------- training checkpoints

def _training_state(model) -> dict:
    return {"step": 5, "model": model.state_dict(), "optimizer": {}, "rng": ckpt.capture_rng(),
            "train_config": {"seed": 0}, "model_config": SMALL.__dict__}


def test_training_checkpoint_round_trips(tmp_path):
    model = _model()
    path = ckpt.checkpoint_path(tmp_path, 5)
    ckpt.save_training_checkpoint(path, _training_state(model))
    state = ckpt.load_training_checkpoint(path)
    assert state["step"] == 5 and torch.equal(state["model"]["head.weight"], model.head.weight)
    assert ckpt.list_checkpoints(tmp_path) == [path]


def test_training_checkpoint_with_a_flipped_byte_is_refused(tmp_path):
    path = ckpt.checkpoint_path(tmp_path, 5)
    ckpt.save_training_checkpoint(path, _training_state(_model()))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"ckpt_000005.pt is corrupt: sha256 \w+ but .* expects \w+"):
        ckpt.load_training_checkpoint(path)


def test_checkpoint_without_manifest_is_an_interrupted_write(tmp_path):
    path = ckpt.checkpoint_path(tmp_path, 5)
    ckpt.save_training_checkpoint(path, _training_state(_model()))
    (tmp_path / "ckpt_000005.pt.sha256").unlink()
    assert ckpt.list_checkpoints(tmp_path) == []
    with pytest.raises(ckpt.CheckpointError, match="no manifest"):
        ckpt.load_training_checkpoint(path)


def test_rng_states_round_trip(tmp_path):
    import random
    import numpy as np
    ckpt.save_training_checkpoint(tmp_path / "c.pt", _training_state(_model()))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.restore_rng(ckpt.load_training_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
