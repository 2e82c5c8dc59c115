"""benchmarks.anchors: published numbers placed beside the measured ones, with the right ratios."""

from __future__ import annotations

from benchmarks import anchors


def _model(name: str, segany_s: float) -> dict:
    return {
        "name": name,
        "weights": "official",
        "input_size": 1024,
        "macs": {
            "image_encoder": 2980e9 if name == "sam_vit_h" else 1e9,
            "prompt_decoder": 1.3e9,
            "total": 2e9,
        },
        "params": {"image_encoder": 1, "prompt_decoder": 1, "total": 93.74e6},
        "segany_latency": {"median_s": segany_s, "p90_s": segany_s},
        "encoder_latency": {"median_s": segany_s / 2},
    }


RESULT = {
    "models": [_model("mobile_sam", 0.8), _model("edge_sam", 0.4), _model("sam_vit_h", 9.0)],
    "segevery": {
        "models": [
            {"name": "mobile_sam", "everything": [{"grid": 32, "median_s": 2.0}]},
            {"name": "edge_sam", "everything": [{"grid": 32, "median_s": 1.0}]},
        ]
    },
}


def test_segany_against_the_survey_and_mobilesam():
    md = "\n".join(anchors.survey_segany_table(RESULT))
    assert "| MobileSAM | `mobile_sam` | 30 | 424 | 800 | 1.89 | 1.00 | 1.00 |" in md
    assert "| EdgeSAM | `edge_sam` | 24 | 259 | 400 | 1.54 | 0.50 | 0.61 |" in md
    assert "| TinySAM | `tinysam` | 29 | 422 | not run |" in md


def test_segevery_and_efficiency_tables():
    md = "\n".join(anchors.survey_segevery_table(RESULT))
    assert "| MobileSAM | `mobile_sam` | 347 | 1313 | 5022 | 2000 | 1.00 | 1.00 |" in md
    assert "| EdgeSAM | `edge_sam` | 404 | 1553 | 5877 | 1000 | 0.50 | 1.18 |" in md
    eff = "\n".join(anchors.survey_efficiency_table({"models": [_model("sam_vit_b", 1.0)]}))
    assert "| SAM-B | `sam_vit_b` | 93.74 | 93.74 | 1.00 | 746.4 | 4.0 | 0.01 |" in eff


def test_primary_anchors_and_the_second_hand_caveat():
    md = anchors.render(RESULT)
    assert "| 2973 | 2980.0 | 1.002 |" in md  # ViT-H encoder MACs: measured / published
    assert "Second-hand" in md and "arXiv:2410.04960" in md
