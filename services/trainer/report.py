"""The readable report: one Markdown page linking the plots and the model card."""

from __future__ import annotations

import json
from pathlib import Path

from services.contract.card import ModelCard
from services.trainer.tasks.common import TaskResult, md_table

REPORT = "report.md"


def write_report(report_dir: Path, card: ModelCard, result: TaskResult, notes: list[str]) -> Path:
    q = card.quantization
    lines = [
        f"# {card.name} ({card.task.value})",
        "",
        card.description,
        "",
        f"- model card: [card.json](../card.json) · edge model: `{card.model_file}` (int8), "
        "float model: `model_float.tflite`",
        f"- inputs: {', '.join(card.input.fields)} · window {card.input.window} · "
        f"tensor {card.input.shape} {card.input.dtype}"
        + (f" · target {card.input.target}" if card.input.target else ""),
    ]
    if q is not None:
        lines.append(f"- int8 input scale {q.input_scale:.6g} zero point {q.input_zero_point}; "
                     f"output scale {q.output_scale:.6g} zero point {q.output_zero_point}")
    lines += [f"- {n}" for n in notes]
    lines += ["", "## Data", "", "```", json.dumps(card.data, indent=2), "```", ""]
    lines += result.sections
    parity = card.parity
    rows = [[c["name"], c["value"], c["limit"], "pass" if c["passed"] else "FAIL", c["detail"]]
            for c in parity.get("checks", [])]
    lines += ["", f"## Parity gate on {parity.get('samples', 0)} test inputs: "
              f"{'passed' if parity.get('passed') else 'FAILED'}", "",
              md_table(["check", "value", "limit", "", "what"], rows), ""]
    if parity.get("errors"):
        lines += [f"- error: {e}" for e in parity["errors"]] + [""]
    lines += ["## Sizes", "", md_table(["what", "bytes"], [[k, v] for k, v in card.sizes.items()]),
              ""]
    if card.test_vectors:
        lines += [f"{len(card.test_vectors)} test vectors in the card (raw input → final output, "
                  f"tolerance {card.test_vector_tolerance:.3g}).", ""]
    lines += ["## Plots", ""]
    for name, caption in result.plots:
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    lines += ["## Tools", "", md_table(["tool", "version"],
                                       [[k, v] for k, v in card.tool_versions.items()]), ""]
    path = report_dir / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path
