"""In-graph upscaling of the decoder's low-res logits to the original image size (``upscale=True``).

Appends to an exported decoder graph the ONNX equivalent of
:func:`leansam.transforms.postprocess_logits` for the model's :class:`ImageTransform`:

* ``crop`` families (SAM, EfficientViT-SAM): resize to the square prompt frame, crop the rows and
  columns the image occupies (``int(h * frame / max(h, w) + 0.5)``, computed in float64 like
  Python does), resize to (H, W);
* squashing families (SAM 2, EfficientSAM): resize straight to (H, W).

Interpolation is ``Resize`` with ``pytorch_half_pixel`` coordinates (``F.interpolate``'s
``align_corners=False``), linear or cubic with a = -0.75 (PyTorch's bicubic). Built with
``onnx.helper`` because the sizes depend on the ``orig_im_size`` input values, which the
tracing exporters would freeze into constants.
"""

from __future__ import annotations

import numpy as np

from ..transforms import ImageTransform


def append_upscaling(
    proto: object, t: ImageTransform, low: str = "low_res_logits", out: str = "masks"
) -> None:
    """Adds input ``orig_im_size`` ([2] int64: H, W) and output ``out`` (N x T x H x W logits) to ``proto``."""
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    nodes = []

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name=f"upscale/{name}"))
        return f"upscale/{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [f"upscale/{name}"], name=f"upscale/{name}", **attrs))
        return f"upscale/{name}"

    resize_attrs = {
        "mode": "linear" if t.upsample == "bilinear" else "cubic",
        "coordinate_transformation_mode": "pytorch_half_pixel",
        "cubic_coeff_a": -0.75,
    }
    shape = node("Shape", [low], "shape")
    lead = node("Slice", [shape, const("zero", np.array([0])), const("two", np.array([2]))], "lead")  # N, T
    src = low
    if t.crop:
        side = t.prompt_frame
        sizes = node("Concat", [lead, const("frame", np.array([side, side]))], "frame_sizes", axis=0)
        src = node("Resize", [low, "", "", sizes], "to_frame", **resize_attrs)
        if t.resize == "longest_side":
            hw = node("Cast", ["orig_im_size"], "hw_f64", to=TensorProto.DOUBLE)
            longest = node("ReduceMax", [hw], "longest", keepdims=1)
            scale = node("Div", [const("side_f64", np.array([float(side)])), longest], "scale")
            scaled = node(
                "Add", [node("Mul", [hw, scale], "scaled"), const("half", np.array([0.5]))], "rounded"
            )
            keep = node("Cast", [node("Floor", [scaled], "floor")], "keep", to=TensorProto.INT64)
        else:
            keep = const("keep", np.array([side, side]))
        src = node(
            "Slice", [src, const("start", np.array([0, 0])), keep, const("axes", np.array([2, 3]))], "crop"
        )
    sizes = node("Concat", [lead, "orig_im_size"], "out_sizes", axis=0)
    nodes.append(
        helper.make_node("Resize", [src, "", "", sizes], [out], name="upscale/to_image", **resize_attrs)
    )
    g.node.extend(nodes)
    g.input.append(helper.make_tensor_value_info("orig_im_size", TensorProto.INT64, [2]))
    g.output.append(
        helper.make_tensor_value_info(out, TensorProto.FLOAT, ["num_prompts", "num_masks", "height", "width"])
    )
