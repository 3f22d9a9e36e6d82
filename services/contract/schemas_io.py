"""Generate the checked-in JSON Schemas from the message models, and check for drift."""

from __future__ import annotations

import json
from pathlib import Path

from services.contract.models import MESSAGES

SCHEMA_DIR = Path(__file__).with_name("schemas")


def schema_filename(schema_id: str) -> str:
    # edgeloop.reading/1 -> edgeloop.reading.v1.json
    name, version = schema_id.split("/")
    return f"{name}.v{version}.json"


def render_schemas() -> dict[str, str]:
    """Filename -> JSON text for every message model."""
    out: dict[str, str] = {}
    for schema_id, model in MESSAGES.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://edgeloop.dev/schemas/{schema_filename(schema_id)}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[schema_filename(schema_id)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def drifted_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that differ from what the models generate (or are missing)."""
    expected = render_schemas()
    drift = [n for n, t in expected.items() if not (directory / n).is_file()
             or (directory / n).read_text() != t]
    extra = [p.name for p in directory.glob("*.json") if p.name not in expected]
    return sorted(drift + extra)
