"""Mutation check: plant known faults on the paths that matter most and check that tests catch them.

    python scripts/mutate.py [--only NAME ...] [--out docs/results/mutation.json]
    (--only: run those mutants and update their entries in an existing results file)
    python scripts/mutate.py docs [--check]

Each mutant is a small text patch inside one named function (found by its ``def``, so the patch
survives the function moving within its file). The tree (tracked and untracked, not ignored
files) is copied once to a temporary folder; for each mutant the patched file is written there,
the mutant's tests run against that copy, and the file is restored. A mutant is killed when a
test fails; it survives when every test passes. The tests of every mutant first run once on the
unpatched copy (they must pass, else a kill proves nothing). Writes a results JSON and exits 1
if any mutant survives (2 on a broken setup: a patch that no longer applies, a failing baseline).
``docs`` regenerates the mutation table in docs/testing.md from the results file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from doc_tables import splice

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "mutation.json"
DOC = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- mutation:begin -->", "<!-- mutation:end -->"
TIMEOUT_S = 900

REG = "tests/models/test_registry_parity.py"
INT8 = ("tests/compress/test_int8.py", "tests/compress/test_ptq.py", "-m", "not slow")
OPS = ("tests/everything/test_ops.py",)


@dataclass(frozen=True)
class Mutant:
    """A planted fault: replace ``old`` by ``new`` (exactly once) inside ``function`` of ``path``."""

    name: str
    area: str
    path: str
    function: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments


MUTANTS = (
    Mutant("quarter-pixel prompt offset (fixture)", "prompt coordinate transform",
           "leansam/models/prompt_encoder.py", "embed_points", "coords + 0.5", "coords + 0.25",
           (REG, "-k", "predictor and mobile_sam")),
    Mutant("quarter-pixel prompt offset (live, single mask)", "prompt coordinate transform",
           "leansam/models/prompt_encoder.py", "embed_points", "coords + 0.5", "coords + 0.25",
           ("tests/models/test_mobile_sam_oracle.py", "-k", "predictor and False and mobile_sam")),
    # SAM's longest-side resize scales x and y alike; a squashing family tells them apart.
    Mutant("x/y prompt scales swapped", "prompt coordinate transform",
           "leansam/interface.py", "layout_prompts", "[fw / w, fh / h]", "[fh / h, fw / w]",
           (REG, "-k", "predictor and efficientsam_vitt")),
    Mutant("box corner labels swapped", "box and point encoding",
           "leansam/interface.py", "join_box_corners", "% 2 + 2)", ".remainder(2).neg() + 3)",
           (REG, "-k", "predictor and mobile_sam and box")),
    Mutant("padding point added with a box instead of without", "box and point encoding",
           "leansam/interface.py", "layout_prompts", '(style.pad == "no_box" and boxes is None)',
           '(style.pad == "no_box" and boxes is not None)', (REG, "-k", "predictor and mobile_sam")),
    Mutant("padding point keeps its positional encoding", "box and point encoding",
           "leansam/models/prompt_encoder.py", "embed_points",
           "pe = torch.where(pad, torch.zeros_like(pe), pe)", "pe = pe",
           (REG, "-k", "predictor and mobile_sam and points")),
    Mutant("crop keeps one frame row/column too many", "mask postprocessing",
           "leansam/transforms.py", "_resize_matrix", "[:keep]", "[: keep + 1]",
           ("tests/test_transforms.py", REG, "-k", "not registry or (predictor and mobile_sam)")),
    Mutant("step-wise crop one pixel too large", "mask postprocessing",
           "leansam/transforms.py", "_resize_stepwise", "x = x[..., :fh, :fw]", "x = x[..., : fh + 1, : fw + 1]",
           ("tests/test_transforms.py",)),
    Mutant("first renaming rule ignored", "checkpoint key remapping",
           "leansam/zoo/_rename.py", "rename_key", "for pattern, repl in rules:", "for pattern, repl in rules[1:]:",
           (REG, "-k", "strict and efficientsam_vitt")),
    Mutant("SAM 2 decoder MLP layers swapped", "checkpoint key remapping",
           "leansam/zoo/hiera.py", "filter_fn", '("lin1." if m.group(2) == "0" else "lin2.")',
           '("lin2." if m.group(2) == "0" else "lin1.")', (REG, "-k", "sam2.1_hiera_tiny")),
    Mutant("NMS suppresses at IoU equal to the threshold", "NMS",
           "leansam/everything/ops.py", "batched_nms", "over = box_iou(cand, cand) > iou_threshold",
           "over = box_iou(cand, cand) >= iou_threshold", OPS),
    Mutant("NMS ignores boxes kept in earlier blocks", "NMS",
           "leansam/everything/ops.py", "batched_nms", "suppressed |= over.any(dim=0).numpy()", "pass", OPS),
    Mutant("RLE in row-major order", "RLE",
           "leansam/everything/ops.py", "masks_to_rle", "cols = masks.transpose(1, 2).contiguous()",
           "cols = masks.contiguous()", OPS),
    Mutant("RLE run boundaries of crop masks one pixel late", "RLE",
           "leansam/everything/ops.py", "masks_to_rle", "pos = ((x0 + c) * big_h + y0 + r)",
           "pos = ((x0 + c) * big_h + y0 + r + 1)", OPS),
    Mutant("resume branch switched off", "resume",
           "leansam/train/runner.py", "_resume", "if cfg.resume and ckpt.is_file():",
           "if False and cfg.resume and ckpt.is_file():", ("tests/train/test_runs.py", "-k", "resume or sigkill")),
    Mutant("resume restarts the step counter", "resume",
           "leansam/train/runner.py", "_resume", 'return int(state["step"])', "return 0",
           ("tests/train/test_runs.py", "-k", "resume or sigkill")),
    Mutant("int8 conv as fake-quant float maths", "int8 dispatch",
           "leansam/compress/int8.py", "forward", "y = torch.ops.onednn.qconv2d_pointwise(",
           "y = _apply_activation(F.conv2d((self._input_uint8(x, s, zp).float() - zp) * s, "
           "self.dequantized_weight(), self.bias, *self._geometry), self._fused) if True else "
           "torch.ops.onednn.qconv2d_pointwise(", INT8),
    Mutant("int8 linear as fake-quant float maths", "int8 dispatch",
           "leansam/compress/int8.py", "forward", "y = torch.ops.onednn.qlinear_pointwise(",
           "y = _apply_activation(F.linear((self._input_uint8(x2, s, zp).float() - zp) * s, "
           "self.dequantized_weight(), self.bias), self.post_op) if True else "
           "torch.ops.onednn.qlinear_pointwise(", INT8),
)  # fmt: skip


class PatchError(RuntimeError):
    """A mutant's patch no longer applies to the tree."""


def patch(source: str, m: Mutant) -> str:
    """``source`` with ``m.old`` replaced by ``m.new`` inside the (first) function that holds it."""
    lines = source.splitlines(keepends=True)
    for i, line in enumerate(lines):
        head = re.match(rf"(\s*)def {re.escape(m.function)}\(", line)
        if not head:
            continue
        indent, end = len(head.group(1)), i + 1
        while end < len(lines):
            text = lines[end]
            if (
                text.strip()
                and len(text) - len(text.lstrip()) <= indent
                and not text.lstrip().startswith(")")
            ):
                break
            end += 1
        body = "".join(lines[i:end])
        if body.count(m.old) == 1:
            return "".join(lines[:i]) + body.replace(m.old, m.new) + "".join(lines[end:])
    raise PatchError(f"{m.name}: `{m.old}` not found once in any `def {m.function}` of {m.path}")


def copy_tree(dest: Path) -> None:
    """Tracked and untracked (not ignored) files of the worktree, as they are now."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run_tests(tree: Path, args: tuple[str, ...]) -> tuple[int, list[str], float]:
    """(exit code, failing test ids, seconds) of pytest on the scratch tree."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--tb=no",
        "-rfE",
        "--maxfail=5",
        *args,
    ]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, ["(timeout)"], time.perf_counter() - t0
    failed = [
        ln.split(" ", 1)[1].split(" - ")[0]
        for ln in r.stdout.splitlines()
        if ln.startswith(("FAILED ", "ERROR "))
    ]
    return r.returncode, failed, time.perf_counter() - t0


def run(mutants: tuple[Mutant, ...], out: Path) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="leansam-mutate-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for args in dict.fromkeys(m.tests for m in mutants):  # baseline: each selection passes unpatched
            rc, failed, _ = run_tests(tree, args)
            if rc != 0:
                print(
                    f"error: tests {' '.join(args)} fail without a mutant (exit {rc}): {failed}",
                    file=sys.stderr,
                )
                return 2
        for m in mutants:
            target = tree / m.path
            original = target.read_text()
            try:
                target.write_text(patch(original, m))
            except PatchError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            try:
                rc, failed, seconds = run_tests(tree, m.tests)
            finally:
                target.write_text(original)
            status = "killed" if rc != 0 and failed else "survived"
            print(f"{status:8} {m.name} ({seconds:.0f} s) {failed[:3]}", flush=True)
            results.append({**asdict(m), "status": status, "killed_by": failed, "seconds": round(seconds, 1)})
    if len(mutants) < len(MUTANTS) and out.is_file():  # a partial run updates the other entries' file
        fresh = {r["name"]: r for r in results}
        kept = {r["name"]: r for r in json.loads(out.read_text())["mutants"]}
        results = [fresh.get(m.name) or kept[m.name] for m in MUTANTS if m.name in fresh or m.name in kept]
    survivors = [r["name"] for r in results if r["status"] != "killed"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"written_by": "python scripts/mutate.py", "mutants": results}, indent=1) + "\n"
    )
    print(f"{len(results) - len(survivors)} of {len(results)} mutants killed; results in {out}")
    return 1 if survivors else 0


def render_table(results: dict) -> str:
    lines = [
        f"Written by `{results['written_by']}` into `docs/results/mutation.json`.",
        "",
        "| area | planted fault (function) | status | killed by (first failing tests) |",
        "| --- | --- | --- | --- |",
    ]
    for r in results["mutants"]:
        killers = "<br>".join(f"`{k}`" for k in r["killed_by"][:3]) or "-"
        lines.append(f"| {r['area']} | {r['name']} (`{r['function']}`) | {r['status']} | {killers} |")
    return "\n".join(lines)


def docs(check: bool) -> int:
    """Regenerates the table in docs/testing.md (``check``: exit 1 if the page differs)."""
    return splice(DOC, BEGIN, END, render_table(json.loads(RESULTS.read_text())), check)


def main(argv: list[str]) -> int:
    if argv[:1] == ["docs"]:
        return docs("--check" in argv)
    only, out, i = [], RESULTS, 0
    while i < len(argv):
        if argv[i] == "--only" and i + 1 < len(argv):
            only.append(argv[i + 1])
            i += 2
        elif argv[i] == "--out" and i + 1 < len(argv):
            out = Path(argv[i + 1])
            i += 2
        else:
            print(
                f"error: unknown argument {argv[i]!r}; see {Path(__file__).name}'s docstring", file=sys.stderr
            )
            return 2
    mutants = tuple(m for m in MUTANTS if not only or m.name in only)
    if not mutants:
        print(f"error: no mutant named {only}", file=sys.stderr)
        return 2
    return run(mutants, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
