"""Small, fast models for the segment-everything tests.

* :func:`tiny_pair` — a leansam ``Sam`` and an official ``segment_anything`` ``Sam`` with
  the SAME small random weights (32-dim decoder, 16 x 16 embedding) and the same cheap
  deterministic image encoder, so the two generators can be compared in seconds,
  crops included. The full-size ViT-B comparison lives in ``test_parity.py``.
* :class:`RegionSam` — a scripted model: a click returns the flat-colour region under
  it with confident logits (+-12), a box returns its own rectangle. Behavioural tests
  (hierarchical coverage, non-overlap, boxes) can then predict the masks exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leansam.models.mask_decoder import MaskDecoder
from leansam.models.prompt_encoder import PromptEncoder
from leansam.models.sam import ImageFeatures, Sam
from leansam.transforms import ImageTransform

DIM, GRID = 32, 16


class PooledEncoder(nn.Module):
    """1 x 3 x 1024 x 1024 -> 1 x 32 x 16 x 16: average pooling and two seeded convolutions."""

    img_size = 1024  # read by the official predictor

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Conv2d(3, DIM, 1)
        self.mix = nn.Conv2d(DIM, DIM, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.tanh(self.proj(F.adaptive_avg_pool2d(x, GRID))))


def tiny_pair(seed: int = 0):
    """(leansam Sam, official Sam) sharing weights and encoder."""
    from tests import oracles

    sa = oracles.segment_anything()
    from segment_anything.modeling import MaskDecoder as SaDecoder
    from segment_anything.modeling import PromptEncoder as SaPrompt
    from segment_anything.modeling import Sam as SaSam
    from segment_anything.modeling import TwoWayTransformer

    del sa
    torch.manual_seed(seed)
    encoder = PooledEncoder(seed).eval()
    official = SaSam(
        image_encoder=encoder,
        prompt_encoder=SaPrompt(
            embed_dim=DIM, image_embedding_size=(GRID, GRID), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=SaDecoder(
            transformer_dim=DIM,
            transformer=TwoWayTransformer(depth=2, embedding_dim=DIM, mlp_dim=2048, num_heads=8),
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    mine = Sam(encoder, PromptEncoder(DIM, (GRID, GRID), (1024, 1024)), MaskDecoder(DIM)).eval()
    mine.load_state_dict(official.state_dict(), strict=True)
    return mine, official


def scripted_masks(
    frame: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, multimask_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "brain" of the scripted models, on the normalised, zero-padded 3 x S x S frame.

    The frame may be 256 (then one logit per frame pixel) or a multiple of it.
    A click (first point; labels other than 2/3) gives three masks: the flat-colour
    region under it, that region grown by 2 low-res pixels, and the whole image. A box
    (labels 2 and 3) gives its rectangle. Logits are +-A with A in 3..12 chosen from the
    clicked colour, at 256 x 256 like a real decoder (so stability scores and thresholds
    matter); IoU predictions are 0.95/0.90/0.86 lowered by up to 0.04 per colour.

    Returns (low-res logits B x M x 256 x 256, IoU B x M), M = 3 or 1.
    """
    s = frame.shape[-1]
    step = s // 256
    small = frame[:, step // 2 :: step, step // 2 :: step]  # 3 x 256 x 256 samples of the frame
    valid = small.abs().sum(0) > 0  # padding is exactly 0 after normalisation
    # Flat-colour regions: pixels of exactly the same (normalised) colour share a region id.
    _, region_id = torch.unique(small.reshape(3, -1).T, dim=0, return_inverse=True)
    region_id = region_id.reshape(256, 256)
    centres = (torch.arange(256) + 0.5) * step
    coords = coords.float()
    b = len(coords)
    low = torch.zeros(b, 3, 256, 256)
    iou = torch.zeros(b, 3)
    is_box = (labels == 2).any(dim=1)
    if is_box.any():
        c = coords[is_box]
        lab = labels[is_box]
        p0 = c[lab == 2].reshape(-1, 2)  # one top-left corner per box
        p1 = c[lab == 3].reshape(-1, 2)
        inside_x = (centres >= p0[:, :1]) & (centres <= p1[:, :1])  # n x 256
        inside_y = (centres >= p0[:, 1:]) & (centres <= p1[:, 1:])
        rect = inside_y[:, :, None] & inside_x[:, None, :]
        low[is_box, 0] = (2 * rect.float() - 1) * 10.0
        iou[is_box, 0] = 0.93
    if (~is_box).any():
        c = coords[~is_box][:, 0]
        # floor(x + 1e-3): the float32 / float64 prompt paths agree on the clicked pixel.
        x = ((c[:, 0] + 1e-3).floor().long() // step).clamp(0, 255)
        y = ((c[:, 1] + 1e-3).floor().long() // step).clamp(0, 255)
        ids, inverse = torch.unique(region_id[y, x], return_inverse=True)
        region = (region_id[None] == ids[:, None, None]) & valid
        grown = (F.max_pool2d(region[:, None].float(), 5, 1, 2)[:, 0] > 0) & valid
        px = small[:, y, x].T  # n x 3 clicked colours
        q = ((px.abs().sum(dim=1) * 3).round().long() % 5).float()[:, None]
        amp = torch.cat([3.0 + 2 * q, 5.0 + q, torch.full_like(q, 12.0)], dim=1)  # n x 3
        masks = torch.stack([region[inverse], grown[inverse], valid.expand(len(c), -1, -1)], dim=1)
        low[~is_box] = (2 * masks.float() - 1) * amp[:, :, None, None]
        iou[~is_box] = torch.tensor([0.95, 0.90, 0.86]) - 0.01 * q
    if not multimask_output:
        return low[:, :1], iou[:, :1]
    if is_box.any():
        raise ValueError("scripted boxes give one mask: use multimask_output=False")
    return low, iou


# The scripted models work in a 256-pixel frame (= the low-res mask size), so the
# post-processing has no 4x upscaling step and the tests stay fast; the logic is unchanged.
FRAME = 256


class RegionSam(Sam):
    """leansam ``Sam`` whose decoder is :func:`scripted_masks` (the encoder passes the frame through)."""

    def __init__(self) -> None:
        transform = ImageTransform(encoder_size=FRAME, prompt_frame=FRAME)
        # decoder_impl="reference": every decoder call goes through decode (overridden below).
        super().__init__(
            nn.Identity(),
            PromptEncoder(8, (16, 16), (FRAME, FRAME)),
            MaskDecoder(8),
            transform,
            decoder_impl="reference",
        )
        self.decode_calls = 0
        self.prompts_seen = 0

    def encode_image(self, x: torch.Tensor) -> ImageFeatures:
        return ImageFeatures(x)

    def decode(self, features, points, mask_input=None, multimask_output=True):
        self.decode_calls += 1
        coords, labels = points
        self.prompts_seen += len(coords)
        low, iou = scripted_masks(features.embed[0], coords, labels, multimask_output)
        return low, iou, torch.full((len(low), 1), 10.0)


def scripted_official():
    """An official ``segment_anything`` Sam running :func:`scripted_masks` through its own predictor."""
    from tests import oracles

    sa = oracles.segment_anything()

    class Encoder(nn.Module):
        img_size = FRAME

        def forward(self, x):
            return x

    class Prompt(nn.Module):
        def forward(self, points, boxes, masks):
            if boxes is not None:
                corners = boxes.reshape(-1, 2, 2)
                lab = torch.tensor([2, 3]).expand(len(corners), 2)
                return (corners, lab), None
            return points, None

        def get_dense_pe(self):
            return None

    class Decoder(nn.Module):
        def forward(
            self,
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            multimask_output,
        ):
            coords, labels = sparse_prompt_embeddings
            return scripted_masks(image_embeddings[0], coords, labels, multimask_output)

    return sa.modeling.Sam(
        Encoder(), Prompt(), Decoder(), [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    ).eval()


def rectangles_image(h: int = 192, w: int = 256) -> np.ndarray:
    """H x W x 3 uint8: a few flat-colour rectangles on a flat background (sizes divide the frame)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (30, 30, 30)
    img[16:96, 16:128] = (200, 40, 40)
    img[64:176, 144:240] = (40, 200, 40)
    img[112:176, 32:112] = (40, 40, 200)
    img[120:150, 60:90] = (220, 220, 20)
    return img
