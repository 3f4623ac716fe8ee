"""The segmenter network: a compact U-Net that labels every pixel of a track scan.

Tensors only: no file IO, no numpy, no device logic (that lives in `checkpoint.py` and the predictor).

Input  (B, in_channels, h, w) float32, ink = high values (`predictor.ink_planes`: `1 - gray / 255`, or the same of
each of B, G, R for a colour segmenter).
Output (B, n_classes, h, w) float32 logits; classes 0 background, 1 curve 1 (solid), 2 curve 2 (dashed).
h and w must be multiples of `config.multiple` (= 2 ** levels); pad with zeros (= blank paper) to get there.

Design, for a 2-core CPU budget of ~0.3 s per 1000 x 300 scan:
- full resolution is kept thin (`base` channels, 8 by default), since every full-res layer costs as much
  as a whole deeper level; thin 1-2 px lines still get a full-res skip path so they are not lost by striding;
- downsampling is a stride-2 conv (learned, and deterministic on CUDA unlike some pooling backwards);
- `levels` down steps give a receptive field of ~200 px at levels=4, enough to see several dash periods,
  so "solid vs dashed" (curve identity where curves cross) is decided from line style, not position;
- decoder merges skips by addition (not concatenation) to halve the decoder cost;
- batch norm is folded into the convs in eval mode, and the layout is channels_last (oneDNN's native one).
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def autocast(device_type: str, precision: str):
    """The arithmetic a precision names, for the code run under it: bfloat16 convs by torch autocast, or float32
    as written (one home for the model's eval reading and training's steps)."""
    return torch.autocast(device_type, dtype=PRECISIONS[precision], enabled=precision != "float32")


def conv2d(x, weight, bias=None, **kwargs):
    """F.conv2d in x's arithmetic. A bfloat16 x outside autocast is bfloat16 read with float32 kernels
    (`Segmenter.bfloat16_kernels` off): operands rounded to bfloat16 as autocast rounds them, products summed in
    float32 as bfloat16 kernels sum them, the output rounded to bfloat16. The same arithmetic, up to the order of
    the sums (as between two CPUs' kernels), in 0.52x the time on a CPU that only emulates bfloat16 kernels."""
    if x.dtype != torch.bfloat16 or torch.is_autocast_enabled(x.device.type):
        return F.conv2d(x, weight, bias, **kwargs)
    rounded = lambda t: None if t is None else t.to(torch.bfloat16).float()
    return F.conv2d(x.float(), rounded(weight), rounded(bias), **kwargs).to(torch.bfloat16)


@dataclass
class SegmenterConfig:
    in_channels: int = 1
    n_classes: int = 3
    base: int = 8        # channels at full resolution
    levels: int = 4      # number of stride-2 down steps; inputs must be multiples of 2 ** levels
    max_width: int = 64  # channel cap for the deepest levels
    mirror_average: bool = False  # in eval mode, also read the left-right mirror image and average (below)
    context: int = 0     # dilated full-resolution layers after the stem (`LineContext`); 0 = none
    precision: str = "float32"    # eval-mode arithmetic: "float32", or "bfloat16" convs (autocast; below)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")

    def widths(self) -> list[int]:
        """Channels at each level, full resolution first; len == levels + 1."""
        return [min(self.base * 2 ** k, self.max_width) for k in range(self.levels + 1)]

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** self.levels


class ConvBNReLU(nn.Module):
    """3x3 conv, batch norm, ReLU. In eval mode the norm is folded into the conv on the fly:
    a quarter of CPU inference time was the separate batch-norm pass over full-res activations."""

    def __init__(self, c_in, c_out, stride=1, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        if self.training:
            return F.relu(self.bn(self.conv(x)), inplace=True)
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)  # (c_out,)
        weight = self.conv.weight * scale[:, None, None, None]
        bias = self.bn.bias - self.bn.running_mean * scale
        x = conv2d(x, weight, bias, stride=self.conv.stride, padding=self.conv.padding, dilation=self.conv.dilation)
        return F.relu(x, inplace=True)


class LineContext(nn.Module):
    """What a full-resolution pixel sees of its line's style: 3x3 convs dilated 2, 4, 8, ... (+-(2 + 4 + ...) px
    more than the stem's +-2: +-16 at three layers, +-32 at four), added back through a 1x1. The strided levels
    see far but blur a 1-2 px dot, and the plain full-resolution path sees 5 px: neither tells a dash-dot line
    (a third curve) from a dashed one. The 1x1 starts at zero in `grow`, so a network gains it unchanged.
    Grown into a trained network and fine-tuned it went unused; trained from the start it is used and reads the
    curves better, but not the third line (MODEL_CARD.md, "Stages 30-34", "Stages 35-36")."""

    def __init__(self, c, n_layers):
        super().__init__()
        self.layers = nn.Sequential(*(ConvBNReLU(c, c, dilation=2 ** (k + 1)) for k in range(n_layers)))
        self.out = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x):
        return x + conv2d(self.layers(x), self.out.weight)


class Down(nn.Sequential):
    """Halve the resolution (stride-2 conv), then one more conv at the new level."""

    def __init__(self, c_in, c_out):
        super().__init__(ConvBNReLU(c_in, c_out, stride=2), ConvBNReLU(c_out, c_out))


class Up(nn.Module):
    """Double the resolution, add the skip, then one conv. The channel change is a 1x1 conv done
    *before* the nearest upsampling (they commute), so it runs on 4x fewer pixels."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.conv = ConvBNReLU(c_out, c_out)

    def forward(self, x, skip):
        x = F.interpolate(conv2d(x, self.proj.weight), scale_factor=2.0, mode="nearest")
        return self.conv(x + skip)


class Segmenter(nn.Module):

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        assert config.levels >= 1, f"levels must be >= 1, got {config.levels}"
        self.config = config
        w = config.widths()
        self.stem = nn.Sequential(ConvBNReLU(config.in_channels, w[0]), ConvBNReLU(w[0], w[0]))
        self.context = LineContext(w[0], config.context) if config.context else nn.Identity()
        self.downs = nn.ModuleList(Down(w[k], w[k + 1]) for k in range(config.levels))
        self.bottleneck = ConvBNReLU(w[-1], w[-1])
        self.ups = nn.ModuleList(Up(w[k + 1], w[k]) for k in reversed(range(config.levels)))
        self.head = nn.Conv2d(w[0], config.n_classes, 1)
        # bfloat16 by bfloat16 kernels (autocast), or by float32 ones where a device only emulates bfloat16's
        # (the predictor decides: `native_bfloat16`); the same arithmetic either way (`conv2d`)
        self.bfloat16_kernels = True
        # channels_last roughly halves CPU conv time (oneDNN's native layout); load_state_dict keeps it
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, h, w) float32, ink high -> logits (B, n_classes, h, w).

        With ``config.mirror_average`` in eval mode, the logits are the log of the mean of two views' class
        probabilities: the image's and its left-right mirror's (mirrored back). A mirrored track is still a
        track (a solid curve stays solid, a dashed one dashed), so the two views' errors differ while their
        answers should not; their mean is a steadier reading of faint and broken strokes, for twice the
        compute. Softmax of these logits is that mean, so callers read probabilities as before.
        With ``config.precision`` "bfloat16" in eval mode the convs run in bfloat16 (torch autocast; softmax and
        the mean in float32): twice as fast on a CPU with AVX-512 BF16 or AMX, with class probabilities within a
        few hundredths of float32's (MODEL_CARD.md, "bfloat16"); with ``bfloat16_kernels`` off, the same rounding
        on float32 kernels (`conv2d`). Training is always float32."""
        if self.training:
            return self._logits(x)
        emulated = self.bfloat16_on_float32_kernels
        with autocast(x.device.type, "float32" if emulated else self.config.precision):
            x = x.to(torch.bfloat16) if emulated else x   # what autocast's first conv reads (`conv2d`)
            if not self.config.mirror_average:
                return self._logits(x).float()
            p = torch.softmax(self._logits(x).float(), dim=1)
            p_mirror = torch.softmax(self._logits(x.flip(-1)).float(), dim=1).flip(-1)
            return torch.log(((p + p_mirror) / 2).clamp_min(1e-30))

    @property
    def bfloat16_on_float32_kernels(self) -> bool:
        return self.config.precision == "bfloat16" and not self.bfloat16_kernels

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        m = self.config.multiple
        assert x.shape[-2] % m == 0 and x.shape[-1] % m == 0, \
            f"input {tuple(x.shape[-2:])} must be a multiple of {m} in h and w; pad with zeros first"
        x = self.context(self.stem(x.contiguous(memory_format=torch.channels_last)))
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = self.bottleneck(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return conv2d(x, self.head.weight, self.head.bias).contiguous()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# cv2's BGR -> grey weights: a grey segmenter's first conv split over B, G, R in these shares reads a colour
# image as it read its grey (to cv2's rounding), so colour can be fine-tuned in
GREY_FROM_BGR = (0.114, 0.587, 0.299)


def grow(model: Segmenter, config: SegmenterConfig, seed: int = 0) -> Segmenter:
    """A larger segmenter (more levels and/or wider levels; same classes and base; a grey input may become
    colour) that computes the same function as `model` in eval mode, to fine-tune capacity or colour in without
    starting over (Net2Net-style).
    Old weights sit in the top-left slice of each new tensor; new channels start random (seeded), but no
    old channel reads them; the new deeper levels enter through the 1x1 projection of the up-step to the
    old bottom level, which starts at zero (the old bottleneck becomes that up-step's conv). A network without
    `LineContext` may gain one (its 1x1 starts at zero); one that has it keeps its layers.
    ``config.mirror_average`` is taken as given (a different function in eval mode, from the same tensors)."""
    old = model.config
    same = (config.n_classes, config.base) == (old.n_classes, old.base)
    inputs = config.in_channels == old.in_channels or (old.in_channels, config.in_channels) == (1, 3)
    wider = all(a >= b for a, b in zip(config.widths(), old.widths()))
    context = config.context == old.context or old.context == 0
    if not (same and inputs and wider and context and config.levels >= old.levels):
        raise ValueError(f"cannot grow {old} into {config}: keep n_classes and base; in_channels may go from 1 "
                         f"(grey) to 3 (colour); levels and every level's width may only grow; context layers "
                         f"may be added to a network that has none")
    torch.manual_seed(seed)
    new = Segmenter(config)
    extra = config.levels - old.levels
    # the up-step that makes the old bottom level (ups run deepest first)
    rename = {"bottleneck.": f"ups.{extra - 1}.conv." if extra else "bottleneck."}
    rename.update({f"ups.{i}.": f"ups.{i + extra}." for i in range(old.levels)})
    target = new.state_dict()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            prefix = next((p for p in rename if name.startswith(p)), "")
            dest = target[rename.get(prefix, prefix) + name[len(prefix):]]
            if t.ndim == 0:
                dest.copy_(t)
                continue
            if t.ndim == 4:  # conv weight (out, in, kh, kw): old outputs ignore new inputs
                dest[: t.shape[0]].zero_()
            if name == "stem.0.conv.weight" and t.shape[1] != dest.shape[1]:   # grey -> B, G, R
                t = torch.cat([t * share for share in GREY_FROM_BGR], 1)
            dest[tuple(slice(n) for n in t.shape)] = t
        if extra:
            target[f"ups.{extra - 1}.proj.weight"][: old.widths()[-1]].zero_()
        if config.context and not old.context:
            target["context.out.weight"].zero_()
    new.load_state_dict(target)
    return new
